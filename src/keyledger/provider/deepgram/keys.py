"""Key management, access verification and grant tokens over Deepgram's management API."""

from __future__ import annotations

from keyledger.provider.deepgram.http import DeepgramHTTP


class KeysAPI:
    http: DeepgramHTTP
