"""Budget SQL on SQLite and PostgreSQL: the period's spend in the customer's time zone is exact (rollups
for whole UTC days, records for the partial days at either end), budgets upsert, the period row locks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyledger.budgets import model, store
from keyledger.provider.port import UsageRecord
from keyledger.usage import store as usage_store
from tests.usage_support import add_connection, add_customer, add_key

T = datetime(2026, 11, 1, tzinfo=UTC)


def seed(engine, n=400, seed_=1):
    add_connection(engine)
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b")
    rng = random.Random(seed_)
    records = []
    for i in range(n):
        created = T - timedelta(days=3) + timedelta(seconds=rng.randrange(0, 36 * 24 * 3600))
        records.append(
            UsageRecord(
                f"r{i}",
                rng.choice(["dg-a", "dg-b"]),
                created,
                "listen",
                "sync",
                "nova-3",
                "sync::nova-3",
                "minute",
                Decimal(rng.randrange(1, 10**6)) / 10**4,
                Decimal(rng.randrange(1, 10**7)) / 10**9,
            )
        )
    with engine.begin() as db:
        usage_store.insert_records(
            db,
            connection_id="con_1",
            records=records,
            keys_by_accessor=usage_store.key_map(db, "con_1"),
            batch="b1",
            synced_at=T,
        )
    return records


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_spend_is_exact_in_the_customers_time_zone(engine, tz):
    records = seed(engine)
    for at in (T + timedelta(days=10), T - timedelta(hours=1), T + timedelta(days=29, hours=20)):
        period = model.period_at(at, tz)
        expected = sum(
            (
                r.cost_usd
                for r in records
                if r.api_key_id == "dg-a" and period.starts_at <= r.created < period.ends_at
            ),
            Decimal(0),
        )
        with engine.connect() as db:
            assert store.spend(db, "cus_a", period) == expected


def test_budget_upsert_and_period_lock(engine):
    add_customer(engine, "cus_a")
    b = model.Budget("cus_a", Decimal("12.5"), (50, 100), "notify")
    with engine.begin() as db:
        assert store.upsert_budget(db, b, T)
        assert not store.upsert_budget(db, model.Budget("cus_a", Decimal("20"), (80,), "revoke"), T)
        got = store.get_budget(db, "cus_a")
        assert got.limit == Decimal("20") and got.thresholds == (80,) and got.action == "revoke"
        row = store.lock_period(db, "cus_a", "2026-11", T)
        assert row["state"] == "ok" and row["fired"] == []
        store.update_period(db, "cus_a", "2026-11", {"fired": [80], "state": "warning"})
        assert store.lock_period(db, "cus_a", "2026-11", T)["fired"] == [80]  # created once
    with engine.connect() as db:
        assert store.get_period(db, "cus_a", "2026-10") is None


ZONES = [
    "Etc/GMT+12",
    "Pacific/Marquesas",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Europe/London",
    "Asia/Tehran",
    "Asia/Kathmandu",
    "Australia/Eucla",
    "Pacific/Kiritimati",
]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ZONES), st.integers(min_value=0, max_value=40))
def test_spend_property_any_zone_and_day(engine, tz, day):
    """Any zone and instant: rollup days plus boundary records equal the record sum over the local month."""
    from sqlalchemy import text

    with engine.begin() as db:
        for t in ("usage_daily", "usage_records", "keys", "customers", "connections"):
            db.execute(text(f"DELETE FROM {t}"))
    records = seed(engine, n=150, seed_=day)
    period = model.period_at(T - timedelta(days=5) + timedelta(days=day), tz)
    expected = sum(
        (
            r.cost_usd
            for r in records
            if r.api_key_id == "dg-b" and period.starts_at <= r.created < period.ends_at
        ),
        Decimal(0),
    )
    with engine.connect() as db:
        assert store.spend(db, "cus_b", period) == expected
