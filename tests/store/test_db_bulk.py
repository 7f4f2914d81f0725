"""``db.bulk.write_rows`` stores exactly what a Core insert of the same values stores, on SQLite (its own
conversions of amounts, instants and days) and PostgreSQL (``COPY``): compared on the raw stored values,
for rows an invoice run writes and for edge values (amounts past 10 places, other time zones, None,
JSON null and nested JSON)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, text

from keyledger.db.bulk import write_rows
from keyledger.db.tables_customers import audit_log
from keyledger.db.tables_invoices import invoice_claims, invoice_lines, invoices
from tests.invoice_support import World

T = datetime(2026, 1, 3, 12, tzinfo=UTC)
PLUS_0530 = timezone(timedelta(hours=5, minutes=30))


def raw_rows(engine, table, key: str, value: str) -> list[tuple]:
    """The stored values as the driver returns them (SQLite: text and scaled integers)."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT * FROM {table.name} WHERE {key} = '{value}' ORDER BY 1, 2"
        )]


def typed_rows(engine, table, key: str, value: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).where(table.c[key] == value))]


def rewrite_with_core(engine, table, key: str, value: str, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c[key] == value))
        conn.execute(insert(table), rows)


def test_a_run_writes_what_core_inserts_would(engine) -> None:
    """The draft, its lines and claims (written by the run through write_rows) and its audit entry,
    deleted and inserted again with Core from their typed values, are stored identically."""
    w = World(engine)
    c = w.customer("acme", plan="tiered")
    w.usage(c, T, minutes="12.3456789012", cost="0.0531")
    w.usage(c, T + timedelta(hours=5), line_item="sync::nova-2", minutes="7", cost="0.0301")
    inv = w.service.run("2026-01", customer=c).entries[0].invoice_id
    children = ((invoice_lines, "invoice_id"), (invoice_claims, "invoice_id"), (audit_log, "subject"))
    before = {t.name: raw_rows(engine, t, k, inv) for t, k in ((invoices, "id"), *children)}
    assert all(before.values()), before
    typed = {t.name: typed_rows(engine, t, k, inv) for t, k in ((invoices, "id"), *children)}
    for table, key in children:  # children first (foreign keys), then the invoice, then back in order
        with engine.begin() as conn:
            conn.execute(table.delete().where(table.c[key] == inv))
    rewrite_with_core(engine, invoices, "id", inv, typed["invoices"])
    for table, key in children:
        rewrite_with_core(engine, table, key, inv, typed[table.name])
    after = {t.name: raw_rows(engine, t, k, inv) for t, k in ((invoices, "id"), *children)}
    assert after == before


AUDIT_EDGES = [
    {"id": "aud_utc", "at": T, "actor": "a", "action": "x", "subject": "bulk", "details": {"n": None}},
    {"id": "aud_ist", "at": datetime(2026, 1, 3, 2, 15, 0, 7, tzinfo=PLUS_0530), "actor": "a", "action": "x",
     "subject": "bulk", "details": {"nested": [1, "two", {"three": 3}]}},
    {"id": "aud_null", "at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "actor": "a",
     "action": "x", "subject": "bulk", "details": None},
]


def test_edge_values_are_stored_as_core_stores_them(engine) -> None:
    cols = list(AUDIT_EDGES[0])
    with engine.begin() as conn:
        write_rows(conn, audit_log, cols, [[row[k] for k in cols] for row in AUDIT_EDGES])
    bulk = raw_rows(engine, audit_log, "subject", "bulk")
    rewrite_with_core(engine, audit_log, "subject", "bulk", AUDIT_EDGES)
    assert raw_rows(engine, audit_log, "subject", "bulk") == bulk
    back = {r["id"]: r for r in typed_rows(engine, audit_log, "subject", "bulk")}
    assert back["aud_ist"]["at"] == datetime(2026, 1, 2, 20, 45, 0, 7, tzinfo=UTC)
    assert back["aud_null"]["details"] is None


def test_amounts_and_days_on_an_invoice_row(engine) -> None:
    """Amounts beyond 10 places round half-even as ExactAmount's binding does; None stays NULL; days."""
    w = World(engine)
    c = w.customer("acme")
    inv = w.service.run("2026-01", customer=c).entries[0].invoice_id
    row = typed_rows(engine, invoices, "id", inv)[0]
    row.update(
        subtotal=Decimal("1.00000000005"), tax=Decimal("1.00000000015"), total=Decimal("-2.00000000025"),
        exchange_rate=Decimal("123456789.0123456789"), issued_on=date(2026, 2, 1), due_on=None,
        customer_email=None, updated_at=datetime(2026, 2, 1, 0, 0, tzinfo=PLUS_0530),
    )
    with engine.begin() as conn:
        conn.execute(invoice_lines.delete().where(invoice_lines.c.invoice_id == inv))
        conn.execute(invoice_claims.delete().where(invoice_claims.c.invoice_id == inv))
        conn.execute(invoices.delete().where(invoices.c.id == inv))
        cols = list(row)
        write_rows(conn, invoices, cols, [[row[k] for k in cols]])
    bulk = raw_rows(engine, invoices, "id", inv)
    rewrite_with_core(engine, invoices, "id", inv, [row])
    assert raw_rows(engine, invoices, "id", inv) == bulk
    back = typed_rows(engine, invoices, "id", inv)[0]
    assert back["exchange_rate"] == Decimal("123456789.0123456789")
    # past 10 places: half-even on both databases (PostgreSQL's NUMERIC alone would round half away
    # from zero: 1.0000000001, 1.0000000002, -2.0000000003)
    assert (back["subtotal"], back["tax"], back["total"]) == (
        Decimal("1.0000000000"), Decimal("1.0000000002"), Decimal("-2.0000000002"),
    )
    assert back["issued_on"] == date(2026, 2, 1) and back["due_on"] is None


def test_a_naive_instant_is_refused_and_nothing_is_written(engine) -> None:
    row = dict(AUDIT_EDGES[0], id="aud_naive", at=datetime(2026, 1, 3, 12))
    cols = list(row)
    with pytest.raises(Exception, match="naive|timezone|tz"):
        with engine.begin() as conn:
            write_rows(conn, audit_log, cols, [[row[k] for k in cols]])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE id = 'aud_naive'")).scalar_one() == 0
