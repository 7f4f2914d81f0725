"""The ledger's SQL on SQLite and PostgreSQL: dedupe, rollups of exactly the inserted rows, exact sums,
attribution (revoked keys included), late re-attribution, the lease and the watermark."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from keyledger.db.tables_usage import usage_records
from keyledger.provider.port import UsageRecord
from keyledger.usage import store
from tests.usage_support import (
    add_connection,
    add_customer,
    add_key,
    ledger_rows,
    recomputed_rollups,
    rollups,
)

T = datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC)
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def rec(rid, key="dg-a", created=T, item="sync::nova-3", qty="1.5", usd="0.0064500001", unit="minute"):
    return UsageRecord(
        rid, key, created, "listen", "sync", "nova-3", item, unit, Decimal(qty), Decimal(usd), 200, ("t1",)
    )


def insert(engine, records, batch, cid="con_1"):
    with engine.begin() as conn:
        return store.insert_records(
            conn,
            connection_id=cid,
            records=records,
            keys_by_accessor=store.key_map(conn, cid),
            batch=batch,
            synced_at=NOW,
        )


def seed(engine):
    add_connection(engine)
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b", status="revoked")


def test_dedupe_and_rollups_of_exactly_the_new_rows(engine):
    seed(engine)
    first = [
        rec(f"r{i}", key="dg-a" if i % 2 else "dg-b", created=T + timedelta(hours=i * 7)) for i in range(10)
    ]
    res = insert(engine, first, "b1")
    assert (res.inserted, res.unattributed) == (10, 0)
    # overlapping batch: 5 old, 5 new, one new twice within the batch
    second = first[5:] + [rec(f"n{i}", created=T + timedelta(hours=i)) for i in range(5)] + [rec("n0")]
    res = insert(engine, second, "b2")
    assert (res.inserted, res.unattributed) == (5, 0)
    assert len(ledger_rows(engine)) == 15
    assert rollups(engine) == recomputed_rollups(engine)
    # a replay of everything adds nothing
    assert insert(engine, first + second, "b3").inserted == 0
    assert rollups(engine) == recomputed_rollups(engine)


def test_revoked_keys_attribute_and_unknown_keys_are_kept_unattributed(engine):
    seed(engine)
    res = insert(
        engine, [rec("a"), rec("b", key="dg-b"), rec("c", key="dg-unknown"), rec("d", key="dg-unknown")], "b1"
    )
    assert (res.inserted, res.unattributed) == (4, 2)
    by_id = {r["request_id"]: r for r in ledger_rows(engine)}
    assert by_id["a"]["customer_id"] == "cus_a" and by_id["a"]["key_id"] == "key_a"
    assert by_id["b"]["customer_id"] == "cus_b"  # revoked key: still the customer's usage
    assert by_id["c"]["customer_id"] is None
    # the key becomes known later (e.g. a key create whose commit came after Deepgram's call)
    add_key(engine, "key_c", "cus_a", "con_1", "dg-unknown")
    with engine.begin() as conn:
        assert store.reattribute(conn, "con_1") == 2
    by_id = {r["request_id"]: r for r in ledger_rows(engine)}
    assert by_id["c"]["customer_id"] == "cus_a" and by_id["c"]["key_id"] == "key_c"
    assert rollups(engine) == recomputed_rollups(engine)


def test_amounts_and_sums_are_exact(engine):
    seed(engine)
    tiny = [rec(f"t{i}", usd="0.0000000001", qty="0.0000000001") for i in range(1000)]
    big = [rec("big", usd="123456789.0123456789", qty="98765432.1234567891")]
    insert(engine, tiny + big, "b1")
    cell = next(iter(rollups(engine).values()))
    assert cell[3] == Decimal("123456789.0123457789")
    assert cell[2] == Decimal("98765432.1234568891")
    assert cell[4] == 1001
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(usage_records.c.cost_usd))).scalar()
    assert total == Decimal("123456789.0123457789")
    row = next(r for r in ledger_rows(engine) if r["request_id"] == "t0")
    assert (
        row["cost_usd"] == Decimal("0.0000000001") and row["created"] == T and row["day"] == date(2026, 11, 2)
    )
    assert row["tags"] == ["t1"]


def test_amounts_past_ten_places_round_half_even_on_both_databases(engine):
    """The ledger keeps 10 places; a provider amount with more is rounded half-even when stored, on
    PostgreSQL as on SQLite (whose NUMERIC would round half away from zero)."""
    seed(engine)
    insert(engine, [
        rec("tie-even", usd="0.00000000005", qty="1.00000000025"),
        rec("tie-odd", usd="0.00000000015", qty="2.00000000035"),
        rec("past", usd="0.123456789012345", qty="0.000000000049"),
    ], "b1")
    got = {r["request_id"]: (r["cost_usd"], r["quantity"]) for r in ledger_rows(engine)}
    assert got == {
        "tie-even": (Decimal("0.0000000000"), Decimal("1.0000000002")),
        "tie-odd": (Decimal("0.0000000002"), Decimal("2.0000000004")),
        "past": (Decimal("0.1234567890"), Decimal("0.0000000000")),
    }
    assert rollups(engine) == recomputed_rollups(engine)


def test_lease_is_exclusive_expires_and_guards_the_watermark(engine):
    add_connection(engine)
    with engine.begin() as conn:
        store.ensure_state(conn, "con_1", NOW)
        store.ensure_state(conn, "con_1", NOW)  # idempotent
        assert store.try_lease(conn, "con_1", "A", NOW, NOW + timedelta(minutes=5))
        assert not store.try_lease(conn, "con_1", "B", NOW, NOW + timedelta(minutes=5))
        assert store.try_lease(conn, "con_1", "A", NOW, NOW + timedelta(minutes=5))  # re-entrant
        assert not store.set_watermark(conn, "con_1", "B", NOW, NOW)
        assert store.set_watermark(conn, "con_1", "A", NOW - timedelta(hours=1), NOW)
        # expired: B may take it; then A can neither renew nor move the watermark
        later = NOW + timedelta(minutes=6)
        assert store.try_lease(conn, "con_1", "B", later, later + timedelta(minutes=5))
        assert not store.renew_lease(conn, "con_1", "A", later, later + timedelta(minutes=5))
        assert not store.set_watermark(conn, "con_1", "A", NOW, NOW)
        assert store.try_lease(conn, "con_1", "C", later, later, steal_from="B")  # dead owner taken over
        store.release_lease(conn, "con_1", "C", later)
        state = store.read_state(conn, "con_1")
    assert state["lease_owner"] is None and state["watermark"] == NOW - timedelta(hours=1)


def test_usage_lines_by_line_item_day_and_key(engine):
    seed(engine)
    add_key(engine, "key_a2", "cus_a", "con_1", "dg-a2")
    insert(
        engine,
        [
            rec("1", created=T, usd="0.10"),
            rec("2", created=T + timedelta(days=1), usd="0.20"),
            rec("3", key="dg-a2", created=T, usd="0.30"),
            rec("4", created=T, item="sync::aura-2", unit="character", qty="100", usd="0.003"),
            rec("5", key="dg-b", created=T, usd="9"),
        ],
        "b1",
    )
    with engine.connect() as conn:
        lines = store.usage_lines(
            conn, customer_id="cus_a", start=date(2026, 11, 1), end=date(2026, 11, 30), by="line-item"
        )
        assert [(x["line_item"], x["cost_usd"], x["requests"]) for x in lines] == [
            ("sync::aura-2", Decimal("0.003"), 1),
            ("sync::nova-3", Decimal("0.60"), 3),
        ]
        days = store.usage_lines(
            conn, customer_id="cus_a", start=date(2026, 11, 3), end=date(2026, 11, 3), by="day"
        )
        assert [(x["day"], x["cost_usd"]) for x in days] == [(date(2026, 11, 3), Decimal("0.20"))]
        by_key = store.usage_lines(
            conn, customer_id="cus_a", start=date(2026, 11, 1), end=date(2026, 11, 30), by="key"
        )
        assert {(x["api_key_id"], x["line_item"]): x["requests"] for x in by_key} == {
            ("dg-a", "sync::aura-2"): 1,
            ("dg-a", "sync::nova-3"): 2,
            ("dg-a2", "sync::nova-3"): 1,
        }
        assert store.find_customer_id(conn, "ext-cus_a") == "cus_a"
        assert store.find_customer_id(conn, "cus_a") == "cus_a"
        assert store.find_customer_id(conn, "nobody") is None
