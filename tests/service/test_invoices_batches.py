"""A run builds customers in batches (one transaction each): the batch size changes nothing in the drafts,
a customer whose draft cannot be priced fails alone (its earlier draft untouched) while the rest of its
batch is built, and every record is claimed by exactly one invoice (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from keyledger.customers.store import list_audit
from keyledger.db.tables_usage import usage_records
from keyledger.invoices import store
from keyledger.invoices.service import InvoiceService
from tests.invoice_support import World


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def content(service: InvoiceService, invoice_id: str) -> dict:
    doc = service.get(invoice_id)
    return {k: doc[k] for k in ("customer_id", "subtotal", "tax", "total", "lines", "plan", "timezone")}


def claims(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        claimed = len(store.claimed_records(conn))
        records = conn.execute(select(func.count()).select_from(usage_records)).scalar_one()
    return claimed, records


def test_batch_size_changes_nothing_and_a_bad_customer_fails_alone(engine):
    w = World(engine)
    ids = [
        w.customer(f"b{i}", plan="tiered" if i % 2 else "flat", tz="Asia/Tokyo" if i % 3 == 0 else "UTC")
        for i in range(7)
    ]
    for i, c in enumerate(ids):
        w.usage(c, at(2026, 1, 5), minutes=str(50 + 30 * i))
        w.usage(c, at(2026, 1, 31, 20), "sync::nova-3", minutes="7")  # February 1st in Tokyo
    small = InvoiceService(engine, w.clock, batch_size=3)
    first = {e.customer_id: e for e in small.run("2026-01").entries}
    assert {e.outcome for e in first.values()} == {"created"}
    drafts = {c: content(small, e.invoice_id) for c, e in first.items()}
    assert claims(engine) == (4 * 2 + 3 * 1, 14)  # Tokyo's January ends at 15:00 UTC on the 31st

    # One batch-wide run rebuilds exactly the drafts the batches of 3 built.
    again = {e.customer_id: e for e in w.service.run("2026-01").entries}
    assert {e.outcome for e in again.values()} == {"rebuilt"}
    assert {c: content(w.service, e.invoice_id) for c, e in again.items()} == drafts

    # b3's new usage has no rate under its plan: b3 fails, its draft stays as it was; its batch is built.
    bad = ids[3]
    w.usage(bad, at(2026, 1, 9), "async::nova-3", minutes="5")
    for c in ids:
        w.usage(c, at(2026, 1, 10), minutes="1")
    third = {e.customer_id: e for e in small.run("2026-01").entries}
    assert third[bad].outcome == "failed" and "async::nova-3" in third[bad].message
    assert third[bad].invoice_id is None
    assert content(small, first[bad].invoice_id) == drafts[bad]
    for c in ids:
        if c != bad:
            assert third[c].outcome == "rebuilt"
            assert content(small, third[c].invoice_id) != drafts[c]  # the new minute is billed
    with engine.connect() as conn:
        rebuilt_audits = [a for a in list_audit(conn, limit=10_000) if a["action"] == "invoice.rebuilt"]
    assert {a["subject"] for a in rebuilt_audits} == {e.invoice_id for e in again.values()}

    # Every record of January (in each customer's zone) is claimed by exactly one invoice, bad's new one
    # by none; records are never claimed twice (the primary key).
    with engine.connect() as conn:
        rows = [(rid, inv) for rid, inv, _ in store.claimed_records(conn)]
    assert len(rows) == len({r[0] for r in rows})
    by_invoice: dict[str, int] = {}
    for _, inv in rows:
        by_invoice[inv] = by_invoice.get(inv, 0) + 1
    for i, c in enumerate(ids):
        expected = 1 if c == bad else 2 if i % 3 == 0 else 3  # Tokyo: 5th and 10th; UTC: also the 31st
        assert by_invoice[first[c].invoice_id] == expected, (c, by_invoice)
