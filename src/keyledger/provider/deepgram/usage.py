"""The request log and the billing breakdown, parsed from the raw JSON with exact decimals."""

from __future__ import annotations

from keyledger.provider.deepgram.http import DeepgramHTTP


class UsageAPI:
    http: DeepgramHTTP
