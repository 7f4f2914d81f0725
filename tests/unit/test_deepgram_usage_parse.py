"""Parsing Deepgram's request log and billing breakdown from raw JSON, per docs/dgemu.md's wire choices."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.core.errors import ProviderError
from keyledger.core.money import loads_exact
from keyledger.provider.deepgram.http import decode_json
from keyledger.provider.deepgram.usage import (
    LineItemResolver,
    decode_requests_content,
    endpoint_of,
    format_instant,
    parse_billing_breakdown,
    parse_request,
    parse_request_tolerant,
    parse_requests_content,
    parse_requests_page,
)

NAMES = ["streaming::nova-3", "sync::nova-3", "sync::nova-3-medical", "sync::aura-2", "sync::nova-2"]


def test_listen_minutes_are_total_audio_over_sixty_exactly():
    raw = loads_exact(
        '{"request_id":"r1","created":"2026-11-01T12:00:00.123456Z","path":"/v1/listen","api_key_id":"k",'
        '"code":200,"response":{"details":{"usd":0.0043000001,"duration":30,"total_audio":90.0,'
        '"channels":3,"models":["nova-3-medical"],"method":"sync","tags":["a"]}}}'
    )
    r = parse_request(raw, LineItemResolver(NAMES))
    assert r.endpoint == "listen" and r.method == "sync" and r.unit == "minute"
    assert r.quantity == Decimal("1.5")
    assert isinstance(r.cost_usd, Decimal) and r.cost_usd == Decimal("0.0043000001")
    assert r.line_item == "sync::nova-3-medical"  # priced itself: the longest family wins
    assert r.created == datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert r.tags == ("a",) and r.code == 200


def test_minutes_keep_ten_places():
    raw = loads_exact(
        '{"request_id":"r1","created":"2026-11-01T12:00:00Z","path":"/v1/listen","api_key_id":"k",'
        '"code":200,"response":{"details":{"usd":0.01,"total_audio":1,"models":["nova-3"],"method":"sync"}}}'
    )
    assert parse_request(raw, LineItemResolver(NAMES)).quantity == Decimal("0.0166666667")


def test_family_is_longest_prefix_else_model():
    resolve = LineItemResolver(NAMES)
    assert resolve("streaming", "nova-3-general") == "streaming::nova-3"
    assert resolve("async", "nova-2-phonecall") == "async::nova-2"
    assert resolve("sync", "whisper-large") == "sync::whisper-large"
    assert LineItemResolver()("sync", "nova-3") == "sync::nova-3"


def test_speak_read_agent_units():
    resolve = LineItemResolver(NAMES)
    speak = loads_exact(
        '{"request_id":"s","created":"2026-11-01T00:00:00Z","path":"/v1/speak","api_key_id":"k","code":200,'
        '"response":{"details":{"usd":0.0009,"characters":30,"duration":2.1,"total_audio":0,'
        '"models":["aura-2-thalia-en"],"method":"sync"}}}'
    )
    r = parse_request(speak, resolve)
    assert (r.endpoint, r.unit, r.quantity, r.line_item) == ("speak", "character", 30, "sync::aura-2")
    read = loads_exact(
        '{"request_id":"t","created":"2026-11-01T00:00:00Z","path":"/v1/read","api_key_id":"k","code":200,'
        '"response":{"details":{"usd":0.001,"tokens_in":100,"tokens_out":25,"models":["read"]}}}'
    )
    r = parse_request(read, resolve)
    assert (r.endpoint, r.unit, r.quantity, r.method) == ("read", "token", 125, "sync")
    agent = loads_exact(
        '{"request_id":"u","created":"2026-11-01T00:00:00+02:00","path":"/v1/agent/converse","api_key_id":"k",'
        '"code":200,"response":{"details":{"usd":0.08,"total_audio":120,"models":["voice-agent"],'
        '"method":"streaming"}}}'
    )
    r = parse_request(agent, resolve)
    assert (r.endpoint, r.unit, r.quantity) == ("agent", "minute", 2)
    assert r.created == datetime(2026, 10, 31, 22, 0, tzinfo=UTC)


def test_failed_request_has_no_quantity_and_its_usd_or_zero():
    resolve = LineItemResolver(NAMES)
    failed = loads_exact(
        '{"request_id":"f","created":"2026-11-01T00:00:00Z","path":"/v1/listen","api_key_id":"k","code":400,'
        '"response":{"code":400,"message":"corrupt audio"}}'
    )
    r = parse_request(failed, resolve)
    assert r.quantity == 0 and r.cost_usd == 0 and r.code == 400 and r.model == "unknown"
    failed_paid = loads_exact(
        '{"request_id":"g","created":"2026-11-01T00:00:00Z","path":"/v1/listen","api_key_id":"k","code":500,'
        '"response":{"details":{"usd":0.5,"total_audio":60,"models":["nova-3"],"method":"sync"}}}'
    )
    r = parse_request(failed_paid, resolve)
    assert r.quantity == 0 and r.cost_usd == Decimal("0.5")


def test_missing_and_extra_fields_are_tolerated():
    raw = loads_exact('{"request_id":"x","created":"2026-11-01T00:00:00Z","surprise":{"a":1}}')
    r = parse_request(raw, LineItemResolver())
    assert r.endpoint == "other" and r.cost_usd == 0 and r.api_key_id == ""
    with pytest.raises(ValueError):
        parse_request({"created": "2026-11-01T00:00:00Z"}, LineItemResolver())


def test_page_reports_items_on_the_wire_and_refuses_garbage():
    body = loads_exact(
        '{"page":0,"limit":2,"requests":[{"request_id":"a","created":"2026-11-01T00:00:00Z"}]}'
    )
    page = parse_requests_page(body, LineItemResolver(), page=0, limit=2)
    assert page.returned == 1 and page.records[0].request_id == "a"
    with pytest.raises(ProviderError):
        parse_requests_page({"nope": []}, LineItemResolver(), page=0, limit=2)
    with pytest.raises(ProviderError):
        parse_requests_page(
            {"requests": [{"request_id": "a", "created": "yesterday"}]}, LineItemResolver(), page=0, limit=2
        )


def test_billing_breakdown_exact_dollars():
    body = loads_exact(
        '{"start":"2026-11-01","end":"2026-11-30","resolution":{"units":"day","amount":1},"results":['
        '{"dollars":0.1000000001,"grouping":{"start":"2026-11-02","end":"2026-11-02","accessor":"k1",'
        '"line_item":"streaming::nova-3","deployment":null,"tags":null}},'
        '{"dollars":3,"grouping":{"start":"2026-11-03","end":"2026-11-03","accessor":null,"line_item":null}}]}'
    )
    rows = parse_billing_breakdown(body)
    assert rows[0].dollars == Decimal("0.1000000001") and rows[0].accessor == "k1"
    assert rows[0].start == date(2026, 11, 2) and rows[0].line_item == "streaming::nova-3"
    assert rows[1].dollars == Decimal(3) and rows[1].accessor is None


def test_endpoints_and_instants():
    assert endpoint_of("/v1/listen?model=nova-3") == "listen"
    assert endpoint_of("/v2/listen") == "listen"
    assert endpoint_of("/v1/speak") == "speak"
    assert endpoint_of("/v1/agent/converse") == "agent"
    assert endpoint_of("/v1/projects") == "other"
    assert format_instant(datetime(2026, 11, 1, 12, tzinfo=UTC)) == "2026-11-01T12:00:00.000000Z"


_num = st.one_of(
    st.integers(-5, 10**6),
    st.decimals(allow_nan=True, allow_infinity=True, places=6),
    st.none(),
    st.text(max_size=4),
    st.booleans(),
)
_details = st.fixed_dictionaries(
    {},
    optional={
        "usd": _num,
        "total_audio": _num,
        "characters": _num,
        "tokens_in": _num,
        "tokens_out": _num,
        "method": st.sampled_from(["sync", "async", "streaming", "", 3]),
        "models": st.one_of(
            st.lists(st.sampled_from(["nova-3", "aura-2-x", "read", ""]), max_size=2), st.just("nova-3")
        ),
        "tags": st.one_of(st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=2), st.just("x")),
    },
)
_raw = st.fixed_dictionaries(
    {
        "request_id": st.sampled_from(["r1", "r2"]),
        "created": st.sampled_from(
            [
                "2026-11-01T12:00:00.123456Z",
                "2026-11-01T12:00:00+02:00",
                "2026-11-01T12:00:00",
                "2026-11-01T12:00:00.5Z",
            ]
        ),
    },
    optional={
        "path": st.sampled_from(
            ["/v1/listen", "/v1/speak", "/v1/read", "/v1/agent", "/v2/listen", "/x", None]
        ),
        "code": st.one_of(st.sampled_from([200, 201, 400, 500]), st.none(), st.text(max_size=2)),
        "api_key_id": st.sampled_from(["k", "", None]),
        "accessor": st.just("acc"),
        "response": st.one_of(
            st.fixed_dictionaries({}, optional={"details": _details, "code": st.just(200)}), st.none()
        ),
    },
)


@settings(max_examples=400, deadline=None)
@given(_raw)
def test_fast_path_equals_tolerant_parse(raw):
    resolve = LineItemResolver(NAMES)

    def outcome(parse):
        try:
            return parse(raw, resolve)
        except ProviderError as exc:  # a hostile value: both refuse it, with the same message
            return str(exc)

    assert outcome(parse_request) == outcome(parse_request_tolerant)


def _json_text(value) -> str:
    """JSON text keeping a Decimal's exact digits as a number (NaN/Infinity as Python's json writes them)."""
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "-Infinity" if value < 0 else "Infinity"
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


# Records shaped as the typed decoder takes them (so the typed path runs), mostly well-formed, with the
# values that must still leave it: failed codes, odd paths and offsets, negative/huge/NaN amounts,
# missing or negative quantities, empty ids.
def _mostly(good, *odd):
    return st.one_of(st.just(good), st.just(good), st.just(good), st.sampled_from(list(odd)))


_typed_details = st.fixed_dictionaries(
    {
        "method": _mostly("sync", "streaming", ""),
        "models": _mostly(["nova-3"], ["nova-3-medical", "x"], ["aura-2-x"], [""], []),
        "usd": st.one_of(
            st.decimals(min_value=0, max_value=10_000, places=8),
            st.decimals(min_value=-1, max_value=20_000, places=8),
            st.sampled_from([Decimal("0.0043"), Decimal("1.50"), Decimal("1E-7"), Decimal("NaN")]),
        ),
        "total_audio": st.one_of(st.decimals(min_value=0, max_value=10**4, places=3), st.none()),
        "characters": st.one_of(st.integers(0, 5000), st.integers(-3, -1), st.none()),
        "tokens_in": st.integers(-1, 900),
        "tokens_out": st.integers(0, 900),
    },
    optional={
        "tags": st.lists(st.text(max_size=3), max_size=2),
        "model": st.just("nova-2"),
    },
)
_typed_raw = st.fixed_dictionaries(
    {
        "request_id": _mostly("r1", "r2", ""),
        "created": _mostly(
            "2026-11-01T12:00:00.123456Z",
            "2026-11-01T12:00:00+00:00",
            "2026-11-01T12:00:00+05:30",
            "2026-11-01T12:00:00",
            "2026-11-01 12:00:00Z",
            "yesterday",
        ),
        "path": st.sampled_from(
            ["/v1/listen", "/v1/speak", "/v1/read", "/v1/agent", "/v2/listen", "/v1/listen?x=1", "/x"]
        ),
        "api_key_id": _mostly("k", ""),
        "code": _mostly(200, 201, 400, 500),
        "response": st.fixed_dictionaries({"details": _typed_details}),
    },
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.lists(_typed_raw, max_size=4), st.lists(st.one_of(_typed_raw, _raw), max_size=3)),
    st.sampled_from([2, 4]),
)
def test_typed_page_decode_equals_plain_parse(items, limit):
    """The msgspec page path gives what decode_json + parse_requests_page give, or the same refusal."""
    content = _json_text({"requests": items, "page": 0}).encode()
    resolve = LineItemResolver(NAMES)

    def outcome(parse):
        try:
            page = parse()
        except ProviderError as exc:
            return str(exc)
        return page.records, page.returned

    typed = outcome(lambda: parse_requests_content(content, resolve, page=0, limit=limit))
    plain = outcome(lambda: parse_requests_page(decode_json(content), resolve, page=0, limit=limit))
    assert typed == plain


def test_a_regular_page_takes_the_typed_path_with_exact_decimals():
    content = (
        b'{"requests":[{"request_id":"r1","created":"2026-11-01T12:00:00.5Z","path":"/v1/listen",'
        b'"api_key_id":"k","code":200,"response":{"details":{"method":"sync","models":["nova-3"],'
        b'"usd":0.1000000000000000055511151231257827,"total_audio":90.0}}}]}'
    )
    decoded, returned = decode_requests_content(content)
    assert returned == 1 and not isinstance(decoded, dict)  # the typed page, not the plain body
    record = parse_requests_content(content, LineItemResolver(NAMES), page=0, limit=10).records[0]
    assert record.cost_usd == Decimal("0.1000000000000000055511151231257827")
    assert str(record.cost_usd) == "0.1000000000000000055511151231257827"
    assert record.quantity == Decimal("1.5") and record.line_item == "sync::nova-3"
    assert record.created == datetime(2026, 11, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_a_page_that_is_not_json_is_refused_in_one_line():
    with pytest.raises(ProviderError, match="not JSON"):
        parse_requests_content(b"<html>", LineItemResolver(NAMES), page=0, limit=10)
