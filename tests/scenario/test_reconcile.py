"""``keyledger reconcile``: the ledger's attributed and unattributed spend against Deepgram's billing
breakdown for the month, to the cent (exactly, in fact, when the ledger is complete)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.usage_support import add_connection, add_customer, add_key, inject, make_requests

from .usage_cli import KEY_ENV, Env


@pytest.fixture
def env(db_url, engine, dgemu, tmp_path) -> Env:
    add_connection(engine, base_url=dgemu.base_url, project_id=dgemu.project_id, api_key_env=KEY_ENV)
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b", status="revoked")
    return Env(db_url=db_url, engine=engine, dgemu=dgemu, tmp=tmp_path)


def test_reconcile_matches_to_the_cent_and_reports_unattributed(env):
    today = datetime.now(UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = today - timedelta(minutes=3)
    if end <= start + timedelta(hours=1):  # first hour of a month: use the previous month
        start = (start - timedelta(days=1)).replace(day=1)
        end = start + timedelta(days=20)
    period = f"{start.year:04d}-{start.month:02d}"
    reqs = make_requests(1500, keys=["dg-a", "dg-b", "dg-op"], start=start, end=end, seed=21)
    inject(env.dgemu, reqs)
    sync = env.run("sync", "--since", start.isoformat())
    assert sync.returncode == 0, sync.stderr
    rec = env.json("reconcile", "--period", period)
    assert set(rec) >= {
        "period",
        "connection",
        "provider_total_usd",
        "attributed_usd",
        "unattributed_usd",
        "difference_usd",
        "customers",
    }
    assert rec["period"] == period and rec["connection"] == "main"
    total = Decimal(rec["provider_total_usd"])
    assert total > 0
    assert Decimal(rec["attributed_usd"]) + Decimal(rec["unattributed_usd"]) == total
    assert Decimal(rec["difference_usd"]) == 0
    assert Decimal(rec["unattributed_usd"]) > 0  # the operator's own key: reported, not lost
    custs = {c["customer_id"]: c for c in rec["customers"]}
    assert set(custs) == {"cus_a", "cus_b"}
    for c in custs.values():
        assert Decimal(c["attributed_usd"]) == Decimal(c["provider_usd"]) > 0
    human = env.run("reconcile", "--period", period)
    assert human.returncode == 0 and "matches to the cent" in human.stdout

    # a record the ledger has not seen yet shows up as a difference
    inject(
        env.dgemu,
        [
            {
                "api_key_id": "dg-a",
                "endpoint": "listen",
                "method": "sync",
                "model": "nova-3",
                "duration_seconds": 6000,
                "created": (end - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        ],
    )
    rec2 = env.json("reconcile", "--period", period)
    diff = Decimal(rec2["difference_usd"])
    assert diff > Decimal("0.01")
    assert Decimal(rec2["provider_total_usd"]) - total == diff
    a = next(c for c in rec2["customers"] if c["customer_id"] == "cus_a")
    assert Decimal(a["provider_usd"]) - Decimal(a["attributed_usd"]) == diff
    assert "MISMATCH" in env.run("reconcile", "--period", period).stdout
