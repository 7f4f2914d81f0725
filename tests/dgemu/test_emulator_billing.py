"""dgemu usage and billing aggregates: breakdown groupings (both wire forms), exact decimal sums, balances."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

Q = Decimal("1E-10")
P = {
    "streaming::nova-3": Decimal("0.0048"),
    "sync::nova-3": Decimal("0.0043"),
    "sync::aura-2": Decimal("0.030"),
}


def cost(it: dict) -> Decimal:
    if it["endpoint"] == "speak":
        return (P["sync::aura-2"] * it["characters"] / 1000).quantize(Q)
    li = f"{it['method']}::nova-3"
    ch = it.get("channels", 1)
    return (P[li] * Decimal(str(it["duration_seconds"])) * ch / 60).quantize(Q)


ITEMS = [
    {
        "api_key_id": "k1",
        "created": "2026-09-01T01:00:00Z",
        "endpoint": "listen",
        "method": "streaming",
        "model": "nova-3",
        "duration_seconds": 1,
        "tags": ["a"],
    },
    {
        "api_key_id": "k1",
        "created": "2026-09-01T02:00:00Z",
        "endpoint": "listen",
        "method": "sync",
        "model": "nova-3",
        "duration_seconds": 7.3,
        "tags": ["a"],
    },
    {
        "api_key_id": "k2",
        "created": "2026-09-01T03:00:00Z",
        "endpoint": "listen",
        "method": "sync",
        "model": "nova-3-medical",
        "duration_seconds": 13,
        "channels": 2,
    },
    {
        "api_key_id": "k2",
        "created": "2026-09-01T23:59:59.999999Z",
        "endpoint": "speak",
        "method": "sync",
        "model": "aura-2-thalia-en",
        "characters": 77,
    },
    {
        "api_key_id": "k1",
        "created": "2026-09-02T00:00:00Z",
        "endpoint": "listen",
        "method": "streaming",
        "model": "nova-3",
        "duration_seconds": 0.001,
    },
    {
        "api_key_id": "k1",
        "created": "2026-09-03T00:00:00Z",
        "endpoint": "speak",
        "method": "sync",
        "model": "aura-2-thalia-en",
        "characters": 1,
    },
]


@pytest.fixture
def seeded(dgemu):
    with dgemu.client() as c:
        r = c.post(f"/_emulator/projects/{dgemu.project_id}/requests", json={"requests": ITEMS})
        assert r.status_code == 200, r.text
    return ITEMS


def get(dgemu, path: str, params=None) -> dict:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}{path}", params=params)
        assert r.status_code == 200, r.text
        return json.loads(r.text, parse_float=Decimal)


def test_record_usd_matches_price_table(dgemu, seeded) -> None:
    recs = get(dgemu, "/requests", {"limit": 100})["requests"]
    by_created = {r["created"][:19]: r for r in recs}
    for it in ITEMS:
        rec = by_created[it["created"][:19]]
        assert rec["response"]["details"]["usd"] == cost(it), it


@pytest.mark.parametrize("wire", ["repeated", "json"])
def test_billing_breakdown_grouping_forms(dgemu, seeded, wire) -> None:
    params = (
        [("grouping", "accessor"), ("grouping", "line_item")]
        if wire == "repeated"
        else [("grouping", '["accessor","line_item"]')]
    )
    params += [("start", "2026-09-01"), ("end", "2026-09-03")]
    body = get(dgemu, "/billing/breakdown", params)
    assert body["start"] == "2026-09-01" and body["end"] == "2026-09-03"
    assert body["resolution"] == {"units": "day", "amount": 1}
    got = {
        (r["grouping"]["start"], r["grouping"]["accessor"], r["grouping"]["line_item"]): r["dollars"]
        for r in body["results"]
    }
    want: dict = {}
    for it in ITEMS:
        li = "sync::aura-2" if it["endpoint"] == "speak" else f"{it['method']}::nova-3"
        k = (it["created"][:10], it["api_key_id"], li)
        want[k] = want.get(k, Decimal(0)) + cost(it)
    assert got == want
    for r in body["results"]:
        g = r["grouping"]
        assert g["start"] == g["end"] and g["deployment"] is None and g["tags"] is None


def test_billing_breakdown_ungrouped_is_exact_daily_sum(dgemu, seeded) -> None:
    body = get(dgemu, "/billing/breakdown", {"start": "2026-09-01", "end": "2026-09-01"})
    assert len(body["results"]) == 1
    r = body["results"][0]
    assert r["dollars"] == sum(cost(it) for it in ITEMS[:4])
    assert r["grouping"] == {
        "start": "2026-09-01",
        "end": "2026-09-01",
        "accessor": None,
        "deployment": None,
        "line_item": None,
        "tags": None,
    }


def test_billing_breakdown_filters_and_tags_grouping(dgemu, seeded) -> None:
    body = get(dgemu, "/billing/breakdown", {"accessor": "k2", "start": "2026-09-01", "end": "2026-09-30"})
    assert sum(r["dollars"] for r in body["results"]) == cost(ITEMS[2]) + cost(ITEMS[3])
    body = get(dgemu, "/billing/breakdown", {"line_item": "sync::aura-2", "start": "2026-09-01"})
    assert sum(r["dollars"] for r in body["results"]) == cost(ITEMS[3]) + cost(ITEMS[5])
    body = get(dgemu, "/billing/breakdown", {"tag": "a", "grouping": "tags", "start": "2026-09-01"})
    assert [(r["grouping"]["tags"], r["dollars"]) for r in body["results"]] == [
        (["a"], cost(ITEMS[0]) + cost(ITEMS[1]))
    ]
    body = get(
        dgemu, "/billing/breakdown", {"grouping": "deployment", "start": "2026-09-02", "end": "2026-09-02"}
    )
    assert [r["grouping"]["deployment"] for r in body["results"]] == ["hosted"]
    with dgemu.client() as c:
        for bad in (
            {"grouping": "nope"},
            {"grouping": '["accessor",'},
            {"grouping": "[1]"},
            {"deployment": "moon"},
            {"start": "09/01/2026"},
        ):
            r = c.get(f"/v1/projects/{dgemu.project_id}/billing/breakdown", params=bad)
            assert r.status_code == 400 and r.json()["err_code"] == "INVALID_QUERY_PARAMETER", bad


def test_billing_fields(dgemu, seeded) -> None:
    body = get(dgemu, "/billing/fields", {"start": "2026-09-01", "end": "2026-09-01"})
    assert body["accessors"] == ["k1", "k2"] and body["deployments"] == ["hosted"] and body["tags"] == ["a"]
    assert body["line_items"] == {
        "streaming::nova-3": "Nova - 3 (Stream)",
        "sync::nova-3": "Nova - 3 (Sync)",
        "sync::aura-2": "Aura -2 (Sync)",
    }


def test_usage_breakdown_and_summary(dgemu, seeded) -> None:
    body = get(
        dgemu, "/usage/breakdown", {"start": "2026-09-01", "end": "2026-09-01", "grouping": "accessor"}
    )
    rows = {r["grouping"]["accessor"]: r for r in body["results"]}
    assert rows["k1"]["requests"] == 2 and rows["k2"]["requests"] == 2
    assert rows["k1"]["hours"] == (Decimal("8.3") / 3600).quantize(Q)
    assert rows["k2"]["hours"] == (Decimal(13) / 3600).quantize(Q)
    assert rows["k2"]["total_hours"] == (Decimal(26) / 3600).quantize(Q)
    assert rows["k2"]["tts_characters"] == 77
    for r in body["results"]:
        assert {
            "hours",
            "total_hours",
            "agent_hours",
            "tokens_in",
            "tokens_out",
            "tts_characters",
            "requests",
            "grouping",
        } <= set(r)
    body = get(dgemu, "/usage/breakdown", {"start": "2026-09-01", "grouping": "models"})
    models = sorted(m for r in body["results"] for m in r["grouping"]["models"])
    assert models == ["aura-2-thalia-en", "aura-2-thalia-en", "nova-3", "nova-3", "nova-3-medical"]
    with dgemu.client() as c:
        r = c.get(
            f"/v1/projects/{dgemu.project_id}/usage/breakdown",
            params=[("grouping", "accessor"), ("grouping", "method")],
        )
        assert r.status_code == 400
    summary = get(dgemu, "/usage", {"start": "2026-09-01", "end": "2026-09-03"})
    assert summary["start"] == "2026-09-01" and summary["end"] == "2026-09-03"
    assert [x["requests"] for x in summary["results"]] == [4, 1, 1]
    assert get(dgemu, "/usage", {"start": "2026-09-01", "accessor": "k2"})["results"][0]["requests"] == 2
    fields = get(dgemu, "/usage/fields", {"start": "2026-09-01"})
    assert fields["processing_methods"] == ["streaming", "sync"] and fields["tags"] == ["a"]


def test_balance_is_debited_by_every_billed_request(dgemu) -> None:
    before = get(dgemu, "/balances")["balances"][0]
    assert before["amount"] == Decimal("200.00") and before["units"].lower() == "usd"
    with dgemu.client() as c:
        r = c.post(f"/_emulator/projects/{dgemu.project_id}/requests", json={"requests": ITEMS})
        assert r.status_code == 200
        r = c.post("/v1/speak?model=aura-2-thalia-en", json={"text": "x" * 1000})
        assert r.status_code == 200
    after = get(dgemu, f"/balances/{before['balance_id']}")
    spent = sum(cost(it) for it in ITEMS) + Decimal("0.030")
    assert after["amount"] == Decimal("200.00") - spent
    total = get(dgemu, "/billing/breakdown", {"start": "2026-01-01"})
    assert sum(r["dollars"] for r in total["results"]) == spent
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/balances/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404 and set(r.json()) == {"err_code", "err_msg", "request_id"}


def test_many_small_amounts_sum_exactly(dgemu) -> None:
    items = [
        {
            "api_key_id": "k",
            "created": f"2026-08-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "endpoint": "listen",
            "method": "sync",
            "model": "nova-3",
            "duration_seconds": 0.1,
        }
        for i in range(1000)
    ]
    with dgemu.client() as c:
        assert (
            c.post(f"/_emulator/projects/{dgemu.project_id}/requests", json={"requests": items}).status_code
            == 200
        )
    body = get(dgemu, "/billing/breakdown", {"start": "2026-08-01", "end": "2026-08-01"})
    per = (Decimal("0.0043") * Decimal("0.1") / 60).quantize(Q)
    assert body["results"][0]["dollars"] == per * 1000 == Decimal("0.0071667")


def test_datetime_bounds_match_date_bounds_and_cut_inside_days(dgemu, seeded) -> None:
    by_date = get(
        dgemu, "/billing/breakdown", {"start": "2026-09-01", "end": "2026-09-02", "grouping": "accessor"}
    )
    by_dt = get(
        dgemu,
        "/billing/breakdown",
        {"start": "2026-09-01T00:00:00Z", "end": "2026-09-02T23:59:59.999999Z", "grouping": "accessor"},
    )
    assert by_date["results"] == by_dt["results"]
    # a bound inside a day counts only the records on the right side of it
    cut = get(dgemu, "/billing/breakdown", {"start": "2026-09-01T01:30:00Z", "end": "2026-09-01T03:00:00Z"})
    assert [r["dollars"] for r in cut["results"]] == [cost(ITEMS[1]) + cost(ITEMS[2])]
    cut = get(
        dgemu, "/usage/breakdown", {"start": "2026-09-01T01:30:00+00:00", "end": "2026-09-01T02:30:00Z"}
    )
    assert [r["requests"] for r in cut["results"]] == [1]
