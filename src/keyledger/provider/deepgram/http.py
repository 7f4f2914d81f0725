"""HTTP core of the Deepgram adapter: one httpx client per connection, retries with backoff, jitter and
``Retry-After`` (tenacity), and Deepgram's three error shapes mapped to ProviderError.

Why httpx and not the official SDK here: the SDK parses JSON numbers as floats (we need exact
decimals from the raw JSON), and it retries non-idempotent POSTs such as key creation (API_NOTES §1.5),
which could create a second key. We retry only what is safe: GET/DELETE always, POST key creation
never blindly (the keys service detects a half-done create by its operation tag instead).

What the provider may send is bounded: a redirect (3xx) is never followed (a clear ProviderError: the
connection's base URL is wrong, or something between us and Deepgram is), and a response body larger
than ``max_response_bytes`` (default 32 MiB, about 60 full request-log pages; setting
``provider_max_response_bytes``) is refused while it is read, before it is parsed. NaN and Infinity
literals parse as Decimal, so the usage parser sees and refuses them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from keyledger.core.errors import ProviderAuthError, ProviderError
from keyledger.provider.port import ProviderCredentials

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: Cost of one request above which the request log is refused as absurd (setting provider_max_record_usd).
DEFAULT_MAX_RECORD_USD = Decimal(10_000)


def decode_json(content: str | bytes) -> Any:
    """JSON with every number that has a fraction as Decimal (never float), and the NaN/Infinity literals
    Python's json accepts as Decimal NaN/Infinity too (never float), for the callers to refuse."""
    return json.loads(content, parse_float=Decimal, parse_constant=Decimal)


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response, content: bytes) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.content = content


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


def _error_message(response: httpx.Response, content: bytes) -> str:
    """A one-line message from any of Deepgram's error shapes, never echoing credentials."""
    try:
        body = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        text = text.splitlines()[0] if text else ""
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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_record_usd: Decimal = DEFAULT_MAX_RECORD_USD,
    ) -> None:
        self.credentials = credentials
        self.max_response_bytes = max_response_bytes
        self.max_record_usd = max_record_usd
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.calls = 0  # HTTP requests actually sent (retries included)
        self._client = httpx.Client(
            base_url=credentials.base_url.rstrip("/"),
            headers={"Authorization": f"Token {credentials.api_key}", "User-Agent": "keyledger"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
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
                with self._client.stream(method, path, **kwargs) as response:
                    status = response.status_code
                    if 300 <= status < 400:
                        raise ProviderError(
                            f"Deepgram {method} {path}: the server answered a redirect ({status}), which "
                            "keyledger does not follow; check the connection's base URL"
                        )
                    content = self._read_capped(response, method, path)
            except httpx.TransportError as exc:
                raise ConnectionError(
                    f"cannot reach Deepgram at {self.credentials.base_url}: {type(exc).__name__}"
                ) from None
            if status in RETRYABLE_STATUS:
                raise RetryableStatus(response, content)
            if status in (401, 403):
                raise ProviderAuthError(
                    f"Deepgram refused the key ({status} {_error_message(response, content)})"
                )
            if status >= 400:
                raise ProviderError(f"Deepgram {method} {path}: {status} {_error_message(response, content)}")
            if not decode:
                return content
            if not content:
                return None
            try:
                return decode_json(content)
            except ValueError:
                raise ProviderError(f"Deepgram {method} {path}: the response is not JSON") from None

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
                f"Deepgram {method} {path}: {exc.response.status_code} "
                f"{_error_message(exc.response, exc.content)} "
                f"(gave up after {attempts} attempts)"
            ) from None
        except ConnectionError as exc:
            raise ProviderError(f"{exc} (gave up after {attempts} attempts)") from None

    def _read_capped(self, response: httpx.Response, method: str, path: str) -> bytes:
        """The (decoded) body, refused as soon as it exceeds ``max_response_bytes``."""
        cap = self.max_response_bytes
        too_big = ProviderError(
            f"Deepgram {method} {path}: the response is larger than {cap} bytes "
            "(provider_max_response_bytes); refused"
        )
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)
