"""keyledger.client: a small client for the operator's own backend.

It asks keyledger's REST API (with an admin token) for a customer's current Deepgram key and hands back a
ready Deepgram SDK client, so an app never stores customer keys itself and picks up rotations and
reinstatements by itself::

    from keyledger.client import KeyledgerClient

    kl = KeyledgerClient("https://billing.internal", admin_token=os.environ["KEYLEDGER_ADMIN_TOKEN"])
    dg = kl.deepgram("acme")            # a deepgram.DeepgramClient using acme's own key
    dg.listen.v1.media.transcribe_file(request=audio, model="nova-3")

Credentials are cached for ``cache_seconds`` (default 60); call ``invalidate(external_id)`` after Deepgram
answers 401 (the key was rotated or revoked) and ask again. Every credentials read is audited by keyledger.

This module imports nothing else from keyledger (it runs inside the operator's app): only httpx and,
for :meth:`KeyledgerClient.deepgram`, the official ``deepgram-sdk``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

DEEPGRAM_BASE_URL = "https://api.deepgram.com"


class KeyledgerClientError(Exception):
    """keyledger answered with an error; ``status`` and ``detail`` come from its problem+json body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"keyledger answered {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Credentials:
    customer_id: str
    external_id: str
    key_id: str
    api_key_id: str
    base_url: str
    project_id: str
    api_key: str = field(repr=False)
    expires_at: str | None = None


class KeyledgerClient:
    def __init__(
        self,
        base_url: str,
        admin_token: str,
        *,
        timeout: float = 10.0,  # float-ok: seconds
        cache_seconds: float = 60.0,  # float-ok: seconds
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {admin_token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Credentials]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KeyledgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def credentials(self, external_id: str, *, fresh: bool = False) -> Credentials:
        """The customer's current Deepgram key (by external id or keyledger id)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(external_id)
            if hit and not fresh and now - hit[0] < self._cache_seconds:
                return hit[1]
        resp = self._http.get(f"/customers/{quote(external_id, safe='')}/credentials")
        if resp.status_code != 200:
            raise KeyledgerClientError(resp.status_code, _detail(resp))
        body = resp.json()
        creds = Credentials(
            customer_id=body["customer_id"],
            external_id=body["external_id"],
            key_id=body["key_id"],
            api_key_id=body["api_key_id"],
            base_url=body["base_url"],
            project_id=body["project_id"],
            api_key=body["api_key"],
            expires_at=body.get("expires_at"),
        )
        with self._lock:
            self._cache[external_id] = (now, creds)
        return creds

    def invalidate(self, external_id: str | None = None) -> None:
        with self._lock:
            if external_id is None:
                self._cache.clear()
            else:
                self._cache.pop(external_id, None)

    def deepgram(self, external_id: str, *, fresh: bool = False, **kwargs: Any):
        """A ``deepgram.DeepgramClient`` authenticated with the customer's key (extra kwargs go to it)."""
        from deepgram import DeepgramClient, DeepgramClientEnvironment

        creds = self.credentials(external_id, fresh=fresh)
        base = creds.base_url.rstrip("/")
        if base != DEEPGRAM_BASE_URL and "environment" not in kwargs:
            ws = "ws" + base[4:] if base.startswith("http") else base  # http(s)://h -> ws(s)://h
            kwargs["environment"] = DeepgramClientEnvironment(
                base=base, production=ws, agent=ws, agent_rest=base
            )
        return DeepgramClient(api_key=creds.api_key, **kwargs)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("detail") or body.get("title") or body) if isinstance(body, dict) else str(body)
