"""A finalized invoice's content hash never changes (issue 4), on SQLite and PostgreSQL.

The hash is sha256 of the canonical JSON of the invoice document (``InvoiceService.get``) without the
fields a finalized invoice may still change by design: ``status``, ``paid_at``, ``voided_at``,
``void_reason`` (the allowed transitions) and ``credit_notes`` (issued against it, never in it). Late usage,
later runs, rebuilds of other customers' drafts and mark-paid leave it identical, and so do its stored
lines and usage claims.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from keyledger.db.tables_invoices import invoice_lines
from keyledger.invoices import store
from tests.invoice_support import World

MUTABLE = ("status", "paid_at", "voided_at", "void_reason", "credit_notes")


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def _no_float(text: str):
    raise AssertionError(f"float in the invoice document: {text}")


def content_hash(w: World, ref: str) -> str:
    doc = {k: v for k, v in w.service.get(ref).items() if k not in MUTABLE}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    json.loads(canonical, parse_float=_no_float)  # amounts are exact strings, never JSON numbers
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored(w: World, invoice_id: str) -> tuple[list, list]:
    with w.engine.connect() as conn:
        lines = conn.execute(
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id == invoice_id)
            .order_by(invoice_lines.c.position)
        ).all()
        claims = [(rid, late) for rid, _, late in store.claimed_records(conn, invoice_id)]
    return [tuple(r) for r in lines], claims


@pytest.fixture
def w(engine) -> World:
    return World(engine)


def test_finalized_content_hash_never_changes(w):
    a = w.customer("hash-a", plan="tiered")
    b = w.customer("hash-b", plan="flat")
    c = w.customer("hash-c", plan="euro", currency="EUR", tz="Europe/Berlin")
    for cid in (a, b, c):
        w.usage(cid, at(2026, 2, 3), minutes="60", cost="0.2580")
        w.usage(cid, at(2026, 2, 17), line_item="sync::nova-3", minutes="33.3", cost="0.1432")
    w.service.run("2026-02")
    inv = w.service.finalize(w.service.run("2026-02", customer=a).entries[0].invoice_id)
    assert inv["status"] == "finalized" and inv["number"]
    h0, rows0 = content_hash(w, inv["id"]), stored(w, inv["id"])
    doc0 = w.service.get(inv["id"])

    def unchanged():
        assert content_hash(w, inv["id"]) == h0
        assert stored(w, inv["id"]) == rows0

    # Late usage of the finalized period, and of the other customers' (still draft) invoices.
    w.usage(a, at(2026, 2, 26), minutes="250", cost="1.0750")
    w.usage(b, at(2026, 2, 27), minutes="12", cost="0.0516")
    w.usage(c, at(2026, 2, 28, 22), minutes="7", cost="0.0301")
    unchanged()
    # Later runs of the same period: the finalized invoice is left alone, the drafts are rebuilt.
    report = w.service.run("2026-02")
    by_customer = {e.customer_id: e for e in report.entries}
    assert by_customer[a].outcome == "unchanged" and by_customer[a].invoice_id == inv["id"]
    assert by_customer[b].outcome == by_customer[c].outcome == "rebuilt"
    unchanged()
    w.service.run("2026-02", customer=b)  # a second rebuild of another draft
    unchanged()
    # The next period bills the late usage (marked) on a new invoice; the finalized one stays as it was.
    w.clock.advance(timedelta(days=30))
    w.usage(a, at(2026, 3, 4), minutes="5", cost="0.0215")
    mar = w.service.get(w.service.run("2026-03", customer=a).entries[0].invoice_id)
    late = [ln for ln in mar["lines"] if ln["late_adjustment"]]
    assert late and all(ln["late_period"] == "2026-02" for ln in late)
    unchanged()
    w.service.run("2026-03")
    unchanged()
    # Finalizing the other invoices (numbers move on) and paying this one.
    w.service.run("2026-02", finalize=True)
    unchanged()
    paid = w.service.mark_paid(inv["number"])
    assert paid["status"] == "paid"
    unchanged()
    w.service.run("2026-03")  # and once more after it is paid
    unchanged()
    doc = w.service.get(inv["id"])
    for key in ("number", "lines", "subtotal", "tax", "total", "issued_on", "due_on", "finalized_at"):
        assert doc[key] == doc0[key], key
