"""The outbox on SQLite and PostgreSQL: an event exists iff the transaction that announces it commits;
it fans out to the active endpoints subscribed to its type; due deliveries are leased to one sender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from keyledger.db.outbox import enqueue
from keyledger.db.tables_notifications import webhook_deliveries, webhook_endpoints, webhook_events
from keyledger.notifications import store

T = datetime(2026, 11, 2, tzinfo=UTC)


def endpoint(engine, eid, events=None, status="active"):
    with engine.begin() as db:
        db.execute(
            webhook_endpoints.insert().values(
                id=eid,
                url="http://x/",
                events=events,
                secret_ciphertext=b"x",
                status=status,
                created_at=T,
                updated_at=T,
            )
        )


def count(engine, table) -> int:
    with engine.connect() as db:
        return db.execute(select(func.count()).select_from(table)).scalar_one()


def test_rolled_back_change_announces_nothing(engine):
    endpoint(engine, "whe_1")
    with pytest.raises(RuntimeError), engine.begin() as db:
        enqueue(db, "key.created", {"key_id": "k"}, T)
        raise RuntimeError("the change failed")
    assert count(engine, webhook_events) == 0 and count(engine, webhook_deliveries) == 0


def test_fan_out_respects_filters_and_status(engine):
    endpoint(engine, "whe_all")
    endpoint(engine, "whe_inv", events=["invoice.finalized"])
    endpoint(engine, "whe_off", status="disabled")
    with engine.begin() as db:
        enqueue(db, "key.created", {}, T)
        enqueue(db, "invoice.finalized", {}, T)
    with engine.connect() as db:
        pairs = sorted(
            (r.endpoint_id, r.state)
            for r in db.execute(select(webhook_deliveries.c.endpoint_id, webhook_deliveries.c.state))
        )
    assert pairs == [("whe_all", "pending"), ("whe_all", "pending"), ("whe_inv", "pending")]
    with pytest.raises(ValueError), engine.begin() as db:
        enqueue(db, "key.exploded", {}, T)


def test_claims_are_exclusive_until_the_lease_runs_out(engine):
    endpoint(engine, "whe_1")
    with engine.begin() as db:
        for _ in range(5):
            enqueue(db, "key.created", {}, T)
    with engine.begin() as db:
        a = store.claim_due(db, now=T, owner="h|1|a", lease_until=T + timedelta(minutes=5), limit=3)
    with engine.begin() as db:
        b = store.claim_due(db, now=T, owner="h|1|b", lease_until=T + timedelta(minutes=5), limit=10)
    assert len(a) == 3 and len(b) == 2 and not set(a) & set(b)
    with engine.begin() as db:
        assert store.claim_due(db, now=T + timedelta(minutes=1), owner="h|1|c", lease_until=T, limit=10) == []
        late = store.claim_due(
            db, now=T + timedelta(minutes=6), owner="h|1|c", lease_until=T + timedelta(minutes=11), limit=10
        )
    assert len(late) == 5  # expired leases are free again


def test_migration_0004_round_trip(engine):
    """Downgrading 0004 removes exactly its tables and leaves the other branches; upgrading restores them."""
    from alembic import command
    from sqlalchemy import inspect

    from keyledger.db.migrate import alembic_config, current_heads, heads, upgrade

    ours = {
        "budgets",
        "budget_periods",
        "webhook_events",
        "webhook_endpoints",
        "webhook_deliveries",
        "webhook_attempts",
        "worker_jobs",
    }
    before = set(inspect(engine).get_table_names())
    assert ours <= before and "0004" in current_heads(engine)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "budgets@-1")
    assert set(inspect(engine).get_table_names()) == before - ours
    assert "0004" not in current_heads(engine)
    upgrade(engine)
    assert current_heads(engine) == heads() and set(inspect(engine).get_table_names()) == before
    endpoint(engine, "whe_1")
    with engine.begin() as db:
        enqueue(db, "key.created", {}, T)
    assert count(engine, webhook_deliveries) == 1
