"""HTTP core of the Deepgram adapter: one httpx client per connection, retries with backoff, jitter and
``Retry-After`` (tenacity), and Deepgram's three error shapes mapped to ProviderError.

Why httpx and not the official SDK here: the SDK parses JSON numbers as floats (we need exact
decimals from the raw JSON), and it retries non-idempotent POSTs such as key creation (API_NOTES §1.5),
which could create a second key. We retry only what is safe: GET/DELETE always, POST key creation
never blindly (the keys service detects a half-done create by its operation tag instead).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from keyledger.core.errors import ProviderAuthError, ProviderError
from keyledger.core.money import loads_exact
from keyledger.provider.port import ProviderCredentials

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retry_after_seconds(response: httpx.Response) -> float | None:  # float-ok: seconds
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))  # float-ok: seconds
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_message(response: httpx.Response) -> str:
    """A one-line message from any of Deepgram's error shapes, never echoing credentials."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()[0] if response.text.strip() else ""
        return text[:200] or response.reason_phrase
    if isinstance(body, dict):
        code = body.get("err_code") or body.get("category") or ""
        msg = body.get("err_msg") or body.get("message") or ""
        return f"{code}: {msg}".strip(": ") or response.reason_phrase
    return str(body)[:200]


class DeepgramHTTP:
    """Authenticated JSON calls against one Deepgram project, with safe retries."""

    def __init__(
        self,
        credentials: ProviderCredentials,
        *,
        timeout: float = 30.0,  # float-ok: seconds
        max_retries: int = 6,
        backoff_base: float = 0.5,  # float-ok: seconds
        backoff_cap: float = 30.0,  # float-ok: seconds
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.calls = 0  # HTTP requests actually sent (retries included)
        self._client = httpx.Client(
            base_url=credentials.base_url.rstrip("/"),
            headers={"Authorization": f"Token {credentials.api_key}", "User-Agent": "keyledger"},
            timeout=timeout,
            transport=transport,
        )

    @property
    def project_path(self) -> str:
        return f"/v1/projects/{self.credentials.project_id}"

    def close(self) -> None:
        self._client.close()

    def _wait(self, state: RetryCallState) -> float:  # float-ok: seconds
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus):
            after = _retry_after_seconds(exc.response)
            if after is not None:
                return min(after, self.backoff_cap) + random.uniform(0, 0.1)  # noqa: S311
        exp = min(self.backoff_cap, self.backoff_base * (2 ** (state.attempt_number - 1)))
        return random.uniform(0, exp)  # noqa: S311 - full jitter

    def request(
        self, method: str, path: str, *, retry: bool = True, decode: bool = True, **kwargs: Any
    ) -> Any:
        """Send one call; returns the parsed JSON (numbers with fractions as Decimal), or the raw body
        bytes with ``decode=False`` (for a caller that parses elsewhere, e.g. off a prefetch thread)."""

        def once() -> Any:
            self.calls += 1
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ConnectionError(
                    f"cannot reach Deepgram at {self.credentials.base_url}: {type(exc).__name__}"
                ) from None
            if response.status_code in RETRYABLE_STATUS:
                raise RetryableStatus(response)
            if response.status_code in (401, 403):
                raise ProviderAuthError(
                    f"Deepgram refused the key ({response.status_code} {_error_message(response)})"
                )
            if response.status_code >= 400:
                raise ProviderError(
                    f"Deepgram {method} {path}: {response.status_code} {_error_message(response)}"
                )
            if not decode:
                return response.content
            if not response.content:
                return None
            return loads_exact(response.content)

        attempts = self.max_retries + 1 if retry else 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableStatus | ConnectionError)),
            reraise=True,
        )
        try:
            return retrying(once)
        except RetryableStatus as exc:
            raise ProviderError(
                f"Deepgram {method} {path}: {exc.response.status_code} {_error_message(exc.response)} "
                f"(gave up after {attempts} attempts)"
            ) from None
        except ConnectionError as exc:
            raise ProviderError(f"{exc} (gave up after {attempts} attempts)") from None
