"""``keyledger usage price-check`` (also ``keyledger price-check``) and the ``price_check`` part of
``keyledger reconcile``, over real dgemu traffic.

dgemu prices requests with its own table. This dgemu runs with a copy of that table in which one line
item (``sync::aura-2``) costs 0.0315 per 1k characters instead of the list's 0.030: Deepgram billing
something other than its list price. keyledger's own list must agree with every other record and flag
exactly the aura-2 request, with the list's expected amount.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources

import pytest

from tests.conftest import start_dgemu, stop_dgemu
from tests.usage_support import add_connection, add_customer, add_key, inject, make_requests

from .usage_cli import KEY_ENV, Env

WRONG_AURA = "0.0315"


@pytest.fixture
def overpriced_dgemu(tmp_path):
    table = json.loads(resources.files("dgemu").joinpath("data/prices.json").read_text())
    for item in table["items"]:
        if item["line_item"] == "sync::aura-2":
            item["price"] = WRONG_AURA
    path = tmp_path / "dgemu-prices.json"
    path.write_text(json.dumps(table))
    server = start_dgemu(["--price-file", str(path)])
    yield server
    stop_dgemu(server)


@pytest.fixture
def env(db_url, engine, overpriced_dgemu, tmp_path) -> Env:
    add_connection(engine, base_url=overpriced_dgemu.base_url, project_id=overpriced_dgemu.project_id,
                   api_key_env=KEY_ENV)
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b")
    return Env(db_url=db_url, engine=engine, dgemu=overpriced_dgemu, tmp=tmp_path)


def _month() -> tuple[datetime, datetime]:
    today = datetime.now(UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = today - timedelta(minutes=3)
    if end <= start + timedelta(hours=1):  # first hour of a month: use the previous month
        start = (start - timedelta(days=1)).replace(day=1)
        end = start + timedelta(days=20)
    return start, end


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_dgemu_priced_records_agree_and_the_overpriced_one_is_flagged(env):
    start, end = _month()
    period = f"{start.year:04d}-{start.month:02d}"
    listen = [
        r for r in make_requests(400, keys=["dg-a", "dg-b", "dg-op"], start=start, end=end, seed=7)
        if r["endpoint"] == "listen"  # nova-3 (priced by both) and nova-2 / nova-3-medical variants
    ]
    aura = {
        "api_key_id": "dg-b", "endpoint": "speak", "method": "sync", "model": "aura-2-thalia-en",
        "characters": 1234, "created": _stamp(end - timedelta(minutes=5)), "request_id": "req-overpriced",
    }
    inject(env.dgemu, [*listen, aura])
    sync = env.run("sync", "--since", start.isoformat())
    assert sync.returncode == 0, sync.stderr

    report = env.json("price-check", "--period", period)
    assert report["period"] == period and report["price_list"] == "built-in"
    assert report["tier"] == "pay-as-you-go"
    lines = {line["line_item"]: line for line in report["lines"]}
    assert {"sync::nova-3", "streaming::nova-3", "sync::aura-2"} <= set(lines)
    for name in ("sync::nova-3", "streaming::nova-3"):
        assert lines[name]["records"] > 0 and lines[name]["disagreeing_records"] == 0, lines[name]
        # dgemu computes usd from seconds; the ledger keeps minutes to 10 places: equal to 1e-9 per record
        assert abs(Decimal(lines[name]["difference_usd"])) < Decimal("0.000001")
    aura_line = lines["sync::aura-2"]
    assert (aura_line["records"], aura_line["disagreeing_records"]) == (1, 1)
    assert report["disagreeing_records"] == 1 and report["agrees"] is False
    (example,) = report["disagreeing_examples"]
    assert example["request_id"] == "req-overpriced"
    assert Decimal(example["expected_usd"]) == Decimal("0.030") * 1234 / 1000  # 0.03702
    assert Decimal(example["provider_usd"]) == Decimal(WRONG_AURA) * 1234 / 1000  # 0.038871
    assert Decimal(aura_line["difference_usd"]) == Decimal("0.001851")
    # async nova-2 has no dated list price in keyledger's copy: listed, not guessed
    unknown = {u["line_item"]: u for u in report["unknown_line_items"]}
    assert "async::nova-2" in unknown and unknown["async::nova-2"]["records"] > 0
    assert "async::nova-2" not in lines
    total = sum(line["records"] for line in report["lines"]) + sum(u["records"] for u in unknown.values())
    assert report["checked_records"] + sum(u["records"] for u in unknown.values()) == total == len(listen) + 1

    human = env.run("usage", "price-check", "--period", period)
    assert human.returncode == 0, human.stderr
    assert "1 DISAGREE" in human.stdout and "req-overpriced" in human.stdout
    assert "async::nova-2" in human.stdout and "no list price" in human.stdout

    # one customer: cus_a sent no aura request, so everything of theirs agrees
    mine = env.json("price-check", "--period", period, "--customer", "cus_a")
    assert mine["customer_id"] == "cus_a" and mine["agrees"] is True and mine["checked_records"] > 0
    assert mine["checked_records"] < report["checked_records"]

    # reconcile carries the summary beside its §11 fields
    rec = env.json("reconcile", "--period", period)
    assert {"period", "connection", "provider_total_usd", "attributed_usd", "unattributed_usd",
            "difference_usd", "customers"} <= set(rec)
    check = rec["price_check"]
    assert check["disagreeing_records"] == 1 and check["agrees"] is False
    assert check["checked_records"] == report["checked_records"]
    assert Decimal(check["expected_usd"]) == Decimal(report["expected_usd"])
    assert "async::nova-2" in check["unknown_line_items"]
    human_rec = env.run("reconcile", "--period", period)
    assert "price check (pay-as-you-go)" in human_rec.stdout and "1 DISAGREE" in human_rec.stdout

    # the operator's negotiated rate for aura-2 matches what Deepgram billed: all agree
    negotiated = env.tmp / "negotiated.toml"
    negotiated.write_text(
        resources.files("keyledger.provider.deepgram").joinpath("prices.toml").read_text()
        .replace('price = "0.030"', f'price = "{WRONG_AURA}"')
    )
    mine = env.json("price-check", "--period", period, KEYLEDGER_PROVIDER_PRICES=str(negotiated))
    assert mine["price_list"] == str(negotiated) and mine["agrees"] is True
    # a stricter tolerance than dgemu's 10-place usd vs the ledger's 10-place minutes still agrees on nova-3
    strict = env.json("price-check", "--period", period, KEYLEDGER_PRICE_CHECK_RELATIVE="0",
                      KEYLEDGER_PRICE_CHECK_ABSOLUTE_USD="0.000000001")
    assert strict["disagreeing_records"] == 1


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (("--period", "2026-13"), {}, "--period: '2026-13' is not a month"),
        (("--period", "November"), {}, "is not a month"),
        (("--period", "2026-11", "--customer", "nobody"), {}, "no customer 'nobody'"),
        (("--period", "2026-11"), {"KEYLEDGER_PROVIDER_PRICES": "/nonexistent/p.toml"}, "cannot read it"),
        (("--period", "2026-11"), {"KEYLEDGER_PROVIDER_PRICE_TIER": "enterprise"}, "tier 'enterprise'"),
        (("--period", "2026-11"), {"KEYLEDGER_PRICE_CHECK_RELATIVE": "one percent"}, "not a decimal"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(env, args, environ, message):
    res = env.run("usage", "price-check", *args, **environ)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""
