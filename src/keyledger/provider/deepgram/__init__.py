"""The Deepgram adapter: the only code that knows Deepgram's wire format.

``DeepgramProvider`` implements ``keyledger.provider.port.Provider`` for one project and key. Its
parts: ``http`` (client, retries, errors), ``keys`` (key management, access check, grant tokens) and
``usage`` (request log and billing breakdown, parsed with exact decimals).
"""

from __future__ import annotations

from keyledger.provider.deepgram.http import DeepgramHTTP
from keyledger.provider.deepgram.keys import KeysAPI
from keyledger.provider.deepgram.usage import UsageAPI
from keyledger.provider.port import ProviderCredentials


class DeepgramProvider(KeysAPI, UsageAPI):
    def __init__(self, credentials: ProviderCredentials, **http_options) -> None:
        self.http = DeepgramHTTP(credentials, **http_options)

    def close(self) -> None:
        self.http.close()
