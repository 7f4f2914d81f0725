"""Budget periods with a driven clock, on SQLite and PostgreSQL: the projected-spend alert fires once, and
thresholds fire again after the period resets at local midnight in the customer's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.clock import FrozenClock
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import CustomerService
from keyledger.provider.port import UsageRecord
from keyledger.usage import store as usage_store
from tests.service.test_budgets_enforcement import events
from tests.usage_support import add_connection, add_key

N = 0


def spend(rt, api_key_id: str, at: datetime, usd: str) -> None:
    global N
    N += 1
    rec = UsageRecord(
        f"r{N}",
        api_key_id,
        at,
        "listen",
        "sync",
        "nova-3",
        "sync::nova-3",
        "minute",
        Decimal("1"),
        Decimal(usd),
    )
    with rt.engine.begin() as db:
        usage_store.insert_records(
            db,
            connection_id="con_1",
            records=[rec],
            keys_by_accessor=usage_store.key_map(db, "con_1"),
            batch=f"b{N}",
            synced_at=at,
        )


def test_projection_and_reset_in_the_customers_time_zone(db_url):
    clock = FrozenClock(datetime(2026, 11, 1, 12, tzinfo=UTC))
    rt = Runtime(settings=Settings(database_url=db_url, secret_key=generate_key()), environ={})
    rt.clock = clock
    try:
        add_connection(rt.engine)
        cust = CustomerService(rt).add("Acme", external_id="acme", timezone="America/New_York")
        add_key(rt.engine, "key_a", cust.id, "con_1", "dg-a")
        budgets = BudgetService(rt)
        budgets.set("acme", limit="100", action="notify")
        spend(rt, "dg-a", datetime(2026, 11, 3, tzinfo=UTC), "40")
        # November in New York runs Nov 1 04:00 UTC (EDT) to Dec 1 05:00 UTC (EST): 721 h; a third is 240h20m
        clock.set(datetime(2026, 11, 11, 4, 20, tzinfo=UTC))
        out = budgets.evaluate("acme")
        assert out.period == "2026-11" and out.projected == Decimal("120") and out.fired == ()
        assert budgets.evaluate("acme").projected is None  # once per period
        [p] = events(rt, "budget.projected_to_exceed")
        assert p["payload"]["projected"] == "120.0000" and p["payload"]["limit"].startswith("100")
        spend(rt, "dg-a", datetime(2026, 11, 20, tzinfo=UTC), "65")
        assert budgets.evaluate("acme").fired == (50, 80, 100)
        # Dec 1 00:00 UTC is still November in New York: nothing resets yet
        spend(rt, "dg-a", datetime(2026, 12, 1, 1, tzinfo=UTC), "60")  # counts for November (20:00 local)
        clock.set(datetime(2026, 12, 1, 4, 59, tzinfo=UTC))
        out = budgets.evaluate("acme")
        assert out.period == "2026-11" and out.fired == () and out.spent == Decimal("165")
        clock.set(datetime(2026, 12, 1, 5, 0, tzinfo=UTC))  # local midnight: a new period
        out = budgets.evaluate("acme")
        assert out.period == "2026-12" and out.spent == 0 and out.state == "ok"
        spend(rt, "dg-a", datetime(2026, 12, 2, tzinfo=UTC), "55")
        clock.advance(timedelta(days=1))
        assert budgets.evaluate("acme").fired == (50,)
        fired = [
            (e["payload"]["period"], e["payload"]["threshold"])
            for e in events(rt, "budget.threshold_reached")
        ]
        assert fired == [("2026-11", 50), ("2026-11", 80), ("2026-11", 100), ("2026-12", 50)]
    finally:
        rt.engine.dispose()
