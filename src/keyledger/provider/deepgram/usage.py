"""The request log and the billing breakdown, parsed from the raw JSON with exact decimals.

Wire choices follow ``docs/dgemu.md`` (the written contract), not any emulator's code:

- ``created`` is ISO 8601 (``Z`` or an offset, fractional seconds allowed);
- listen and agent are billed in minutes = ``details.total_audio`` / 60 (seconds → minutes; the quotient
  is kept to 10 decimal places, half-even, as the ledger's quantity columns store it); speak in
  characters (``details.characters``); read in tokens (``details.tokens_in + details.tokens_out``);
- the cost is ``details.usd`` (exact); a failed request (code ≥ 400) has quantity 0 and costs its
  ``usd`` if one is given, else 0;
- the line item is ``<method>::<family>`` where the family is the longest family named by
  ``billing/fields`` that prefixes the model, else ``<method>::<model>``.

Missing or extra fields are tolerated: a record is never dropped for a field it lacks. Hostile values
are refused, never repaired: a ``usd`` that is negative, NaN/Infinity, not a number or above the
ceiling (``provider_max_record_usd``, default 10,000 USD per request), and a ``total_audio``,
``characters`` or ``tokens_*`` that is negative, NaN/Infinity or not a number raise ProviderError
naming the record and the field; so does a page holding more records than the ``limit`` asked for.
The sync then fails with its watermark unchanged (``docs/usage-ledger.md``).

A page is first decoded by msgspec into typed structs (C; JSON numbers become Decimal from their exact
text, never float); a page that does not fit those types exactly is decoded again with the standard
library and parsed record by record, so the typed path only ever makes the common page fast, never
changes a result.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import msgspec

from keyledger.core.errors import ProviderError
from keyledger.provider.deepgram.http import DEFAULT_MAX_RECORD_USD, DeepgramHTTP, decode_json
from keyledger.provider.port import BillingRow, RequestsPage, UsageRecord

_ZERO = Decimal(0)
_UNBOUNDED = Decimal("Infinity")
_SIXTY = Decimal(60)
QUANTITY_QUANTUM = Decimal(1).scaleb(-10)
#: Audio seconds of one request above which total_audio is refused as absurd (about 3 years).
MAX_AUDIO_SECONDS = Decimal(10) ** 8

_ENDPOINTS = (
    ("/v1/listen", "listen"),
    ("/v2/listen", "listen"),
    ("/v1/speak", "speak"),
    ("/v2/speak", "speak"),
    ("/v1/read", "read"),
    ("/v1/agent", "agent"),
    ("/agent", "agent"),
)
_UNITS = {"listen": "minute", "agent": "minute", "speak": "character", "read": "token"}


def format_instant(value: datetime) -> str:
    """A UTC instant as the request log's filters take it: ``2026-11-01T12:00:00.123456Z``."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the API's convention: no zone means UTC
    return parsed.astimezone(UTC)


def _dec(value: Any) -> Decimal:
    """A JSON number (Decimal or int from decode_json) or numeric string as Decimal; missing (None) is 0.
    Raises ValueError for anything else, NaN and Infinity included (never silently 0)."""
    if value is None:
        return _ZERO
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        return Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a number") from None
    elif isinstance(value, float):  # float-ok: only reached when a caller parsed JSON without decode_json
        result = Decimal(repr(value))
    else:
        raise ValueError(f"a {type(value).__name__} is not a number")
    if not result.is_finite():
        raise ValueError(f"{result} is not a finite number")
    return result


def _refused(request_id: Any, field: str, detail: str) -> ProviderError:
    return ProviderError(f"Deepgram request log: record {str(request_id)[:80]!r}: {field} {detail}; refused")


def _checked(details: dict[str, Any], field: str, request_id: Any, ceiling: Decimal) -> Decimal:
    """``details[field]`` as a finite Decimal in [0, ceiling] (missing: 0), else ProviderError."""
    try:
        value = _dec(details.get(field))
    except ValueError as exc:
        raise _refused(request_id, field, str(exc)) from None
    if value < 0:
        raise _refused(request_id, field, f"{value} is negative")
    if value > ceiling:
        raise _refused(request_id, field, f"{value} is above the ceiling {ceiling}")
    return value


def endpoint_of(path: Any) -> str:
    if isinstance(path, str):
        p = path.split("?", 1)[0].rstrip("/")
        for prefix, name in _ENDPOINTS:
            if p == prefix or p.startswith(prefix + "/"):
                return name
        if "agent" in p:
            return "agent"
    return "other"


class LineItemResolver:
    """Maps (method, model) to a billing line item using the families named by ``billing/fields``."""

    def __init__(self, line_item_names: Iterable[str] = ()) -> None:
        families = {name.split("::", 1)[1] for name in line_item_names if "::" in name}
        # Longest first so the first prefix match is the longest.
        self._families = sorted((f for f in families if f), key=len, reverse=True)
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, method: str, model: str) -> str:
        key = (method, model)
        found = self._cache.get(key)
        if found is None:
            family = next((f for f in self._families if model.startswith(f)), model)
            found = self._cache[key] = f"{method}::{family}"
        return found


_FAST_ENDPOINTS = {prefix: name for prefix, name in _ENDPOINTS}
_NUMBER = (Decimal, int)


def parse_request(
    raw: dict[str, Any], resolve: LineItemResolver, max_usd: Decimal = DEFAULT_MAX_RECORD_USD
) -> UsageRecord:
    """One request-log record → UsageRecord. Raises ValueError when the record has no id or time, and
    ProviderError for a hostile value (see the module docstring).

    A fast path handles the well-formed successful record (the hot path of a sync); anything unusual
    goes to :func:`parse_request_tolerant`, which gives the same result for the same input."""
    try:
        details = raw["response"]["details"]
        endpoint = _FAST_ENDPOINTS[raw["path"]]
        request_id, code, method = raw["request_id"], raw["code"], details["method"]
        models, usd, tags = details["models"], details["usd"], details.get("tags")
        model = models[0] if type(models) is list else None
        api_key_id, created_s = raw["api_key_id"], raw["created"]
    except (KeyError, TypeError, IndexError):
        return parse_request_tolerant(raw, resolve, max_usd)
    if (
        type(code) is not int or code >= 400 or type(request_id) is not str or not request_id
        or type(method) is not str or not method or type(model) is not str or type(usd) not in _NUMBER
        or type(api_key_id) is not str or not api_key_id or type(created_s) is not str
        or (tags and (type(tags) is not list or any(type(t) is not str for t in tags)))
        or (type(usd) is Decimal and not usd.is_finite())
    ):
        return parse_request_tolerant(raw, resolve, max_usd)
    if not _ZERO <= usd <= max_usd:
        return parse_request_tolerant(raw, resolve, max_usd)  # refuses it
    if endpoint == "listen" or endpoint == "agent":
        seconds = details.get("total_audio")
        if (
            type(seconds) not in _NUMBER
            or (type(seconds) is Decimal and not seconds.is_finite())
            or not _ZERO <= seconds <= MAX_AUDIO_SECONDS
        ):
            return parse_request_tolerant(raw, resolve, max_usd)
        quantity = (seconds / _SIXTY).quantize(QUANTITY_QUANTUM, ROUND_HALF_EVEN)
        unit = "minute"
    elif endpoint == "speak":
        chars = details.get("characters")
        if type(chars) is not int or chars < 0:
            return parse_request_tolerant(raw, resolve, max_usd)
        quantity, unit = Decimal(chars), "character"
    else:
        t_in, t_out = details.get("tokens_in"), details.get("tokens_out")
        if type(t_in) is not int or type(t_out) is not int or t_in < 0 or t_out < 0:
            return parse_request_tolerant(raw, resolve, max_usd)
        quantity, unit = Decimal(t_in + t_out), "token"
    try:
        created = datetime.fromisoformat(created_s)
    except ValueError:
        return parse_request_tolerant(raw, resolve, max_usd)
    if created.tzinfo is not UTC:  # "Z" and "+00:00" parse to the UTC singleton; anything else is slow
        return parse_request_tolerant(raw, resolve, max_usd)
    line_item = resolve._cache.get((method, model)) or resolve(method, model)
    return UsageRecord(
        request_id, api_key_id, created, endpoint, method, model, line_item, unit, quantity,
        Decimal(usd), code, tuple(tags) if tags else (),
    )


def parse_request_tolerant(
    raw: dict[str, Any], resolve: LineItemResolver, max_usd: Decimal = DEFAULT_MAX_RECORD_USD
) -> UsageRecord:
    """The careful parse: any shape, missing or odd fields tolerated, hostile values refused."""
    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("request record without request_id")
    created = parse_instant(raw.get("created"))
    response = raw.get("response")
    if not isinstance(response, dict):
        response = {}
    details = response.get("details")
    if not isinstance(details, dict):
        details = {}
    code = raw.get("code", response.get("code"))
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    endpoint = endpoint_of(raw.get("path"))
    method = details.get("method")
    if not isinstance(method, str) or not method:
        method = "streaming" if endpoint == "agent" else "sync"
    models = details.get("models")
    if isinstance(models, list) and models and isinstance(models[0], str):
        model = models[0]
    elif isinstance(details.get("model"), str) and details["model"]:
        model = details["model"]
    else:
        model = "unknown"
    unit = _UNITS.get(endpoint, "request")
    cost_usd = _checked(details, "usd", request_id, max_usd)
    if code is not None and code >= 400:
        quantity = _ZERO
    elif endpoint in ("listen", "agent"):
        seconds = _checked(details, "total_audio", request_id, MAX_AUDIO_SECONDS)
        quantity = (seconds / _SIXTY).quantize(QUANTITY_QUANTUM, ROUND_HALF_EVEN)
    elif endpoint == "speak":
        quantity = _checked(details, "characters", request_id, _UNBOUNDED)
    elif endpoint == "read":
        quantity = _checked(details, "tokens_in", request_id, _UNBOUNDED) + _checked(
            details, "tokens_out", request_id, _UNBOUNDED
        )
    else:
        quantity = Decimal(1)
    tags = details.get("tags")
    tags = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    api_key_id = raw.get("api_key_id") or raw.get("accessor") or ""
    return UsageRecord(
        request_id=request_id,
        api_key_id=str(api_key_id),
        created=created,
        endpoint=endpoint,
        method=method,
        model=model,
        line_item=resolve(method, model),
        unit=unit,
        quantity=quantity,
        cost_usd=cost_usd,
        code=code,
        tags=tags,
    )


def parse_requests_page(
    body: Any,
    resolve: LineItemResolver,
    *,
    page: int,
    limit: int,
    max_usd: Decimal = DEFAULT_MAX_RECORD_USD,
) -> RequestsPage:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise ProviderError("Deepgram request log: unexpected response (no 'requests' list)")
    raw_items = body["requests"]
    if len(raw_items) > limit:
        raise ProviderError(
            f"Deepgram request log: page {page} holds {len(raw_items)} records, more than the {limit} "
            "asked for; refused"
        )
    records = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            continue
        try:
            records.append(parse_request(raw, resolve, max_usd))
        except ValueError as exc:
            raise ProviderError(f"Deepgram request log: unreadable record ({exc})") from None
    return RequestsPage(records=records, page=page, limit=limit, returned=len(raw_items))


class _Details(msgspec.Struct):
    method: str
    models: list[str]
    usd: Decimal
    total_audio: Decimal | None = None
    characters: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tags: list[str] | None = None
    model: str | None = None


class _Response(msgspec.Struct):
    details: _Details
    code: int | None = None


class _Request(msgspec.Struct):
    request_id: str
    created: str
    path: str
    api_key_id: str
    code: int
    response: _Response


class _Page(msgspec.Struct):
    requests: list[_Request]


_PAGE_DECODER = msgspec.json.Decoder(_Page)


def _typed_record(r: _Request, resolve: LineItemResolver, max_usd: Decimal) -> UsageRecord:
    """One typed record → UsageRecord; anything unusual goes to :func:`parse_request_tolerant` with the
    record as plain data (the same fields), so both paths give the same result."""
    d = r.response.details
    endpoint = _FAST_ENDPOINTS.get(r.path)
    usd = d.usd
    if (
        endpoint is not None and r.code < 400 and r.request_id and r.api_key_id and d.method and d.models
        and usd.is_finite() and _ZERO <= usd <= max_usd
    ):
        if endpoint == "listen" or endpoint == "agent":
            seconds = d.total_audio
            ok = seconds is not None and seconds.is_finite() and _ZERO <= seconds <= MAX_AUDIO_SECONDS
            if ok:
                quantity = (seconds / _SIXTY).quantize(QUANTITY_QUANTUM, ROUND_HALF_EVEN)
                unit = "minute"
        elif endpoint == "speak":
            chars = d.characters
            ok = chars is not None and chars >= 0
            if ok:
                quantity, unit = Decimal(chars), "character"
        else:
            t_in, t_out = d.tokens_in, d.tokens_out
            ok = t_in is not None and t_out is not None and t_in >= 0 and t_out >= 0
            if ok:
                quantity, unit = Decimal(t_in + t_out), "token"
        if ok:
            try:
                created = datetime.fromisoformat(r.created)
            except ValueError:
                created = None
            if created is not None and created.tzinfo is UTC:
                model, method = d.models[0], d.method
                line_item = resolve._cache.get((method, model)) or resolve(method, model)
                tags = d.tags
                return UsageRecord(
                    r.request_id, r.api_key_id, created, endpoint, method, model, line_item, unit,
                    quantity, usd, r.code, tuple(tags) if tags else (),
                )
    return parse_request_tolerant(msgspec.to_builtins(r), resolve, max_usd)


def decode_requests_content(content: bytes) -> tuple[_Page | Any, int]:
    """A request-log page's raw bytes → (the typed page, or the plain JSON body when the page does not fit
    the types exactly, and how many records it holds)."""
    try:
        typed = _PAGE_DECODER.decode(content)
    except (msgspec.ValidationError, msgspec.DecodeError):
        try:
            body = decode_json(content) if content else None
        except ValueError:
            raise ProviderError("Deepgram request log: the response is not JSON") from None
        items = body.get("requests") if isinstance(body, dict) else None
        return body, len(items) if isinstance(items, list) else 0
    return typed, len(typed.requests)


def parse_decoded_page(
    decoded: _Page | Any,
    resolve: LineItemResolver,
    *,
    page: int,
    limit: int,
    max_usd: Decimal = DEFAULT_MAX_RECORD_USD,
) -> RequestsPage:
    """What :func:`decode_requests_content` gave → RequestsPage (same results and refusals either way)."""
    if not isinstance(decoded, _Page):
        return parse_requests_page(decoded, resolve, page=page, limit=limit, max_usd=max_usd)
    items = decoded.requests
    if len(items) > limit:
        raise ProviderError(
            f"Deepgram request log: page {page} holds {len(items)} records, more than the {limit} "
            "asked for; refused"
        )
    try:
        records = [_typed_record(r, resolve, max_usd) for r in items]
    except ValueError as exc:
        raise ProviderError(f"Deepgram request log: unreadable record ({exc})") from None
    return RequestsPage(records=records, page=page, limit=limit, returned=len(items))


def parse_requests_content(
    content: bytes,
    resolve: LineItemResolver,
    *,
    page: int,
    limit: int,
    max_usd: Decimal = DEFAULT_MAX_RECORD_USD,
) -> RequestsPage:
    """A request-log page's raw bytes → RequestsPage."""
    decoded, _ = decode_requests_content(content)
    return parse_decoded_page(decoded, resolve, page=page, limit=limit, max_usd=max_usd)


def parse_billing_breakdown(body: Any) -> list[BillingRow]:
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ProviderError("Deepgram billing breakdown: unexpected response (no 'results' list)")
    rows = []
    for item in body["results"]:
        if not isinstance(item, dict):
            continue
        grouping = item.get("grouping") if isinstance(item.get("grouping"), dict) else {}
        start = grouping.get("start") or body.get("start")
        end = grouping.get("end") or start
        try:
            start_d, end_d = date.fromisoformat(str(start)[:10]), date.fromisoformat(str(end)[:10])
        except ValueError:
            raise ProviderError(f"Deepgram billing breakdown: bad date {start!r}") from None
        try:
            dollars = _dec(item.get("dollars"))
        except ValueError as exc:
            raise ProviderError(f"Deepgram billing breakdown: dollars {exc}") from None
        rows.append(
            BillingRow(
                start=start_d,
                end=end_d,
                accessor=grouping.get("accessor"),
                line_item=grouping.get("line_item"),
                dollars=dollars,
            )
        )
    return rows


def parse_daily_request_counts(body: Any) -> dict[date, int]:
    """Usage breakdown (no grouping, daily rows) → ``{day: requests}``. Anything that is not one row per
    day with a whole ``requests`` count is refused (the caller then re-reads everything)."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ProviderError("Deepgram usage breakdown: unexpected response (no 'results' list)")
    out: dict[date, int] = {}
    for item in body["results"]:
        grouping = item.get("grouping") if isinstance(item, dict) else None
        if not isinstance(grouping, dict):
            raise ProviderError("Deepgram usage breakdown: a row without 'grouping'")
        try:
            day = date.fromisoformat(str(grouping.get("start"))[:10])
            end = date.fromisoformat(str(grouping.get("end") or grouping.get("start"))[:10])
        except ValueError:
            raise ProviderError("Deepgram usage breakdown: bad date") from None
        try:
            count = _dec(item.get("requests", None)) if "requests" in item else None
        except ValueError:
            count = None
        if day != end or count is None or count != count.to_integral_value() or count < 0:
            raise ProviderError("Deepgram usage breakdown: not one whole request count per day")
        out[day] = out.get(day, 0) + int(count)
    return out


#: Parsed pages the reader thread may hold before the caller takes them (memory: about 1 MB per page).
READ_AHEAD_PAGES = 16
_END = object()


class _PageReader:
    """The request-log pages of one window, read on a thread into a bounded queue (see ``_iter_requests``)."""

    def __init__(self, api: UsageAPI, start: datetime, end: datetime, limit: int, status: str | None):
        self._args = (api, start, end, limit, status)
        self._queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD_PAGES)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dg-page-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        api, start, end, limit, status = self._args
        resolve = api._resolver()
        max_usd = api.http.max_record_usd
        page = 0
        try:
            while not self._stopped.is_set():
                content = api._requests_body(start, end, page, limit, status)
                decoded, returned = decode_requests_content(content)
                result = parse_decoded_page(decoded, resolve, page=page, limit=limit, max_usd=max_usd)
                if not self._put(result) or returned < limit:
                    break
                page += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised in its thread
            self._put(exc)
        finally:
            self._put(_END)

    def pages(self) -> Iterator[RequestsPage]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class UsageAPI:
    http: DeepgramHTTP
    _line_items: LineItemResolver | None = None

    def line_item_labels(self, *, start: date, end: date) -> dict[str, str]:
        body = self.http.request(
            "GET",
            f"{self.http.project_path}/billing/fields",
            params={"start": start.isoformat(), "end": end.isoformat()},
        )
        items = body.get("line_items") if isinstance(body, dict) else None
        if not isinstance(items, dict):
            return {}
        return {str(k): str(v) for k, v in items.items()}

    def use_line_items(self, names: Iterable[str]) -> None:
        """Set the line-item names that request records are mapped onto (from ``line_item_labels``)."""
        self._line_items = LineItemResolver(names)

    def _resolver(self) -> LineItemResolver:
        if self._line_items is None:
            self._line_items = LineItemResolver()
        return self._line_items

    def _requests_body(
        self, start: datetime, end: datetime, page: int, limit: int, status: str | None = None
    ) -> bytes:
        params: dict[str, Any] = {
            "start": format_instant(start), "end": format_instant(end), "limit": limit, "page": page
        }
        if status is not None:
            params["status"] = status
        return self.http.request("GET", f"{self.http.project_path}/requests", params=params, decode=False)

    def list_requests(self, *, start: datetime, end: datetime, page: int, limit: int) -> RequestsPage:
        return parse_requests_content(
            self._requests_body(start, end, page, limit),
            self._resolver(),
            page=page,
            limit=limit,
            max_usd=self.http.max_record_usd,
        )

    def iter_failed_requests(self, *, start: datetime, end: datetime, limit: int) -> Iterator[RequestsPage]:
        """Only the failed requests (``status=failed``) between start and end, newest first."""
        return self._iter_requests(start, end, limit, "failed")

    def iter_requests(self, *, start: datetime, end: datetime, limit: int) -> Iterator[RequestsPage]:
        return self._iter_requests(start, end, limit, None)

    def _iter_requests(
        self, start: datetime, end: datetime, limit: int, status: str | None
    ) -> Iterator[RequestsPage]:
        """Every page between start and end (inclusive), newest first, until a short page.

        A reader thread fetches, decodes and parses the pages in order, up to ``READ_AHEAD_PAGES`` ahead of
        the caller, while the caller stores earlier ones (SQLite and the socket release the GIL, so the two
        overlap). Read to the end, it makes exactly the calls the plain loop makes: page n+1 is asked for
        only after page n was parsed and found full, and a page that fails (HTTP or a refused record) ends
        the reading and is raised to the caller in its turn. Closing the iterator early stops the reader
        (it may have read up to READ_AHEAD_PAGES + 1 pages the caller never took)."""
        reader = _PageReader(self, start, end, limit, status)
        try:
            yield from reader.pages()
        finally:
            reader.stop()

    def daily_request_counts(self, *, start: date, end: date) -> dict[date, int]:
        body = self.http.request(
            "GET",
            f"{self.http.project_path}/usage/breakdown",
            params={"start": start.isoformat(), "end": end.isoformat()},
        )
        return parse_daily_request_counts(body)

    def billing_breakdown(self, *, start: date, end: date) -> list[BillingRow]:
        body = self.http.request(
            "GET",
            f"{self.http.project_path}/billing/breakdown",
            params=[
                ("start", start.isoformat()),
                ("end", end.isoformat()),
                ("grouping", "accessor"),
                ("grouping", "line_item"),
            ],
        )
        return parse_billing_breakdown(body)
