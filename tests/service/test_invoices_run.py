"""Invoice runs through the real services on SQLite and PostgreSQL: drafts from the ledger in the
customer's time zone, rebuilds, BYO, finalize/void/paid, credit notes, late usage, and the invariant that
every usage record is billed exactly once."""

from __future__ import annotations

import gc
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from keyledger.core.errors import Conflict, Invalid, NotFound
from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_usage import usage_records
from keyledger.invoices import store
from tests.invoice_support import World


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


@pytest.fixture
def w(engine) -> World:
    return World(engine)


def lines(doc):
    return [
        (ln["line_item"], ln["kind"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in doc["lines"]
    ]


def test_draft_from_ledger_with_tax_and_contract_fields(w):
    a = w.customer("acme")
    w.usage(a, at(2026, 1, 3), "streaming::nova-3", "12.5", "0.05375")
    w.usage(a, at(2026, 1, 4), "streaming::nova-3", "7.5", "0.03225")
    w.usage(a, at(2026, 1, 5), "sync::nova-3", "101", "0.4343")
    w.usage(a, at(2026, 2, 1, 0), "sync::nova-3", "1000", "4.3")  # February: not on January's invoice
    [entry] = w.service.run("2026-01").entries
    assert entry.outcome == "created"
    doc = w.service.get(entry.invoice_id)
    assert set(doc) >= {
        "id",
        "number",
        "status",
        "customer_id",
        "period",
        "currency",
        "subtotal",
        "tax",
        "total",
        "lines",
    }
    assert set(doc["lines"][0]) >= {
        "description",
        "line_item",
        "unit",
        "quantity",
        "unit_price",
        "amount",
        "provider_cost_usd",
    }
    assert doc["status"] == "draft" and doc["number"] is None and doc["period"] == "2026-01"
    assert lines(doc) == [
        ("streaming::nova-3", "usage", "20", "0.01", "0.20"),
        ("sync::nova-3", "usage", "101", "0.005", "0.51"),  # 0.505 rounded half-up, once
    ]
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("0.71", "0.07", "0.78")
    assert doc["provider_cost_usd"] == "0.5203"
    assert w.service.list() == [
        {
            "id": doc["id"],
            "number": None,
            "status": "draft",
            "customer_id": a,
            "period": "2026-01",
            "currency": "USD",
            "total": "0.78",
        }
    ]


def test_period_follows_the_customer_time_zone(w):
    ny = w.customer("ny", tz="America/New_York")
    tokyo = w.customer("tokyo", tz="Asia/Tokyo")
    # 2026-02-01 03:00 UTC is still January 31 in New York; 2026-01-31 16:00 UTC is February 1 in Tokyo.
    for c in (ny, tokyo):
        w.usage(c, datetime(2026, 2, 1, 3, tzinfo=UTC), minutes="1", cost="0.01")
        w.usage(c, datetime(2026, 1, 31, 16, tzinfo=UTC), minutes="2", cost="0.02")
        w.usage(c, datetime(2026, 1, 1, 4, tzinfo=UTC), minutes="4", cost="0.04")  # Dec 31 23:00 in New York
    rep = {e.customer: e for e in w.service.run("2026-01").entries}
    q = {k: w.service.get(e.invoice_id)["lines"][0]["quantity"] for k, e in rep.items()}
    assert q == {"ny": "3", "tokyo": "4"}
    doc = w.service.get(rep["ny"].invoice_id)
    assert doc["timezone"] == "America/New_York"


def test_rerun_rebuilds_the_draft_and_never_touches_a_finalized_invoice(w, engine):
    a = w.customer("acme")
    w.usage(a, at(2026, 1, 3), minutes="10")
    first = w.service.run("2026-01").entries[0]
    w.usage(a, at(2026, 1, 4), minutes="5")
    again = w.service.run("2026-01").entries[0]
    assert again.outcome == "rebuilt" and again.invoice_id == first.invoice_id
    assert w.service.get(first.invoice_id)["lines"][0]["quantity"] == "15"
    fin = w.service.finalize(first.invoice_id)
    before = w.service.get(fin["id"])
    w.usage(a, at(2026, 1, 5), minutes="100")
    third = w.service.run("2026-01").entries[0]
    assert third.outcome == "unchanged" and w.service.get(fin["id"]) == before
    with engine.connect() as conn:
        assert conn.execute(select(invoices.c.id)).all() == [(fin["id"],)]


def test_byo_usage_is_shown_not_billed(w):
    b = w.customer("byo-co", byo=True)
    w.usage(b, at(2026, 1, 3), minutes="10", cost="0.043")
    w.usage(b, at(2026, 1, 3), minutes="30", cost="0.129", byo=True)
    doc = w.service.get(w.service.run("2026-01").entries[0].invoice_id)
    by_kind = {ln["kind"]: ln for ln in doc["lines"]}
    assert by_kind["usage"]["amount"] == "0.10"
    assert by_kind["byo"]["amount"] == "0.00" and by_kind["byo"]["quantity"] == "30"
    assert by_kind["byo"]["provider_cost_usd"] == "0.129"
    assert doc["subtotal"] == "0.10"


def test_customer_without_plan_is_skipped_or_an_error(w):
    w.customer("noplan", plan=None)
    ok = w.customer("ok")
    rep = w.service.run("2026-01")
    assert [(e.customer, e.outcome) for e in rep.entries] == [("noplan", "skipped"), ("ok", "created")]
    with pytest.raises(Invalid, match="has no plan"):
        w.service.run("2026-01", customer="noplan")
    assert [i["customer_id"] for i in w.service.list()] == [ok]


def test_bad_input_changes_nothing(w):
    w.customer("acme")
    for bad in ("2026-13", "2026/01", "jan"):
        with pytest.raises(Invalid, match="YYYY-MM"):
            w.service.run(bad)
    with pytest.raises(NotFound):
        w.service.run("2026-01", customer="nobody")
    with pytest.raises(NotFound):
        w.service.finalize("INV-2026-000001")
    assert w.service.list() == []
    assert gc.isenabled()  # a run pauses the cyclic collector; a failed one gives it back too


def test_transitions_and_gapless_numbers(w, engine):
    ids = []
    for name in ("a", "b", "c"):
        c = w.customer(name)
        w.usage(c, at(2026, 1, 3), minutes="10")
    ids = [e.invoice_id for e in w.service.run("2026-01").entries]
    numbers = [w.service.finalize(i)["number"] for i in ids]
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    with pytest.raises(Conflict, match="already finalized"):
        w.service.finalize(ids[0])
    with pytest.raises(Conflict, match="draft"):
        w.service.mark_paid(w.service.run("2026-02").entries[0].invoice_id)
    paid = w.service.mark_paid(numbers[0])
    assert paid["status"] == "paid" and paid["paid_at"] is not None
    with pytest.raises(Conflict, match="paid"):
        w.service.void(numbers[0])
    voided = w.service.void(numbers[1], reason="wrong plan")
    assert voided["status"] == "void" and voided["number"] == numbers[1]  # void keeps the number
    with pytest.raises(Conflict, match="void"):
        w.service.mark_paid(numbers[1])
    # The void invoice released its usage: a new run builds a replacement that bills it.
    rep = {e.customer: e for e in w.service.run("2026-01").entries}
    assert rep["b"].outcome == "created" and rep["a"].outcome == rep["c"].outcome == "unchanged"
    replacement = w.service.finalize(rep["b"].invoice_id)
    assert replacement["number"] == "INV-2026-000004"
    assert w.service.get(replacement["id"])["total"] == w.service.get(numbers[1])["total"]


def test_credit_notes_full_partial_lines_and_limits(w):
    a = w.customer("acme")  # flat plan, 10 % tax
    w.usage(a, at(2026, 1, 3), "streaming::nova-3", "1000", "4.3")  # 10.00
    w.usage(a, at(2026, 1, 3), "sync::nova-3", "1000", "4.3")  # 5.00
    inv = w.service.finalize(w.service.run("2026-01").entries[0].invoice_id)
    assert (inv["subtotal"], inv["tax"], inv["total"]) == (Decimal("15"), Decimal("1.5"), Decimal("16.5"))
    with pytest.raises(Invalid, match="reason"):
        w.service.credit(inv["number"], reason=" ")
    n1 = w.service.credit(inv["number"], reason="outage", amount="2.50")
    assert (n1["number"], n1["subtotal"], n1["tax"], n1["total"]) == (
        "CN-2026-000001",
        "2.50",
        "0.25",
        "2.75",
    )
    n2 = w.service.credit(inv["number"], reason="sync overbilled", lines=[2])
    assert (n2["number"], n2["total"]) == ("CN-2026-000002", "5.50")
    with pytest.raises(Conflict, match="already credited"):
        w.service.credit(inv["number"], reason="again", lines=[2])
    with pytest.raises(Invalid, match="no line 9"):
        w.service.credit(inv["number"], reason="x", lines=[9])
    with pytest.raises(Conflict, match="exceeds"):
        w.service.credit(inv["number"], reason="too much", amount="7.51")
    with pytest.raises(Invalid, match="decimal places"):
        w.service.credit(inv["number"], reason="x", amount="0.001")
    rest = w.service.credit(inv["number"], reason="close out")
    assert rest["total"] == "8.25"  # 16.50 - 2.75 - 5.50
    with pytest.raises(Conflict, match="exceeds"):
        w.service.credit(inv["number"], reason="nothing left", amount="0.01")
    with pytest.raises(Conflict, match="credit notes"):
        w.service.void(inv["number"])
    doc = w.service.get(inv["number"])
    assert [n["number"] for n in doc["credit_notes"]] == [
        "CN-2026-000001",
        "CN-2026-000002",
        "CN-2026-000003",
    ]
    draft = w.service.run("2026-02").entries[0].invoice_id
    with pytest.raises(Conflict, match="draft"):
        w.service.credit(draft, reason="x")


def test_late_usage_goes_on_the_next_invoice_marked(w):
    a = w.customer("acme", plan="tiered")  # graduated: 100 min at 0.02 then 0.01; 10 free; base 10, min 5
    w.usage(a, at(2026, 1, 3), minutes="60", cost="0.26")
    jan = w.service.finalize(w.service.run("2026-01").entries[0].invoice_id)
    jan_doc = w.service.get(jan["id"])
    # January: 10 included + 50 at 0.02 = 1.00, minimum top-up 4.00, base fee 10 -> 15.00
    assert jan_doc["total"] == "15.00"
    w.usage(a, at(2026, 1, 30), minutes="100", cost="0.43")  # arrives after January was finalized
    w.usage(a, at(2026, 2, 2), minutes="20", cost="0.086")
    feb = w.service.get(w.service.run("2026-02").entries[0].invoice_id)
    late = [ln for ln in feb["lines"] if ln["late_adjustment"]]
    # Rated as part of January: 50 more minutes at tier 1 (1.00) and 50 at tier 2 (0.50) = 1.50 more usage;
    # the minimum top-up (4.00) already billed shrinks to 2.50 -> -1.50... net of both: what January now owes.
    assert [(ln["description"], ln["quantity"], ln["amount"], ln["late_period"]) for ln in late] == [
        ("Late usage from 2026-01: streaming::nova-3", "100", "1.50", "2026-01"),
        ("Late usage from 2026-01: minimum charge already billed", "1", "-1.50", "2026-01"),
    ]
    assert w.service.get(jan["id"]) == jan_doc  # the finalized invoice never changes
    # Rebuilding February gives the same invoice (deterministic), and the late usage is billed once.
    again = w.service.get(w.service.run("2026-02").entries[0].invoice_id)
    assert lines(again) == lines(feb) and again["total"] == feb["total"]


def test_a_replacement_leaves_out_late_usage_a_later_invoice_already_bills(w, engine):
    """January is voided after February billed a late January record: the replacement bills the rest of
    January's usage and not that record (the run reads back what it claimed, not the whole window)."""
    a = w.customer("acme")
    w.usage(a, at(2026, 1, 3), minutes="60", cost="0.26")
    jan = w.service.finalize(w.service.run("2026-01").entries[0].invoice_id)
    w.usage(a, at(2026, 1, 30), minutes="100", cost="0.43")  # late: February bills it
    feb = w.service.run("2026-02").entries[0]
    w.service.void(jan["id"], reason="wrong address")
    [again] = w.service.run("2026-01").entries
    assert again.outcome == "created"
    assert lines(w.service.get(again.invoice_id)) == lines(w.service.get(jan["id"]))
    assert again.total == jan["total"]
    assert sorted(Counter(_claims(engine).values()).items()) == sorted(
        {again.invoice_id: 1, feb.invoice_id: 1}.items()
    )


def _claims(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return store.claimed_ids(conn)


def _record_ids(engine) -> set[int]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(select(usage_records.c.id))}


def test_several_periods_with_late_records_bill_every_record_exactly_once(w, engine):
    import random

    rnd = random.Random(7)
    cs = [
        w.customer("u", tz="UTC"),
        w.customer("p", plan="tiered", tz="America/Los_Angeles"),
        w.customer("e", plan="euro", currency="EUR", tz="Europe/Berlin"),
    ]
    expected_cost = Decimal(0)

    def add(month_index: int, n: int) -> None:
        nonlocal expected_cost
        for _ in range(n):
            c = rnd.choice(cs)
            day = rnd.randint(1, 28)
            hour = rnd.choice([0, 1, 5, 12, 22, 23])
            minutes = Decimal(rnd.randint(1, 5000)) / 100
            cost = minutes * Decimal("0.0043")
            expected_cost += cost
            item = rnd.choice(["streaming::nova-3", "sync::nova-3"])
            w.usage(c, datetime(2026, 1 + month_index, day, hour, tzinfo=UTC), item, str(minutes), str(cost))

    add(0, 40)
    for c in cs:
        w.service.run("2026-01", customer=c)
    add(0, 5)  # late for drafts: picked up by rebuilding the drafts
    add(1, 30)
    for e in w.service.run("2026-01", finalize=True).entries:
        assert e.outcome == "finalized", e
    add(0, 8)  # late after finalization
    snapshot = [w.service.get(i["id"]) for i in w.service.list(period="2026-01")]
    for e in w.service.run("2026-02", finalize=True).entries:
        assert e.outcome == "finalized", e
    add(1, 6)  # late for February
    assert not w.service.run("2026-03").failed
    assert [w.service.get(i["id"]) for i in w.service.list(period="2026-01")] == snapshot
    # Every record whose local period has been invoiced is billed by exactly one invoice (PK of claims),
    # and the invoices' provider costs add up to the ledger's.
    claims = _claims(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                usage_records.c.id,
                usage_records.c.created,
                usage_records.c.customer_id,
                usage_records.c.cost_usd,
            )
        ).all()
    tz = {c: w.customers.get(c).timezone for c in cs}
    from keyledger.invoices.model import local_month

    unbilled = [r for r in rows if r.id not in claims]
    # Only records of periods not yet invoiced may be unbilled: late-2025 local times, nothing else.
    assert all(local_month(r.created, tz[r.customer_id]) < "2026-01" for r in unbilled), unbilled
    invs = [w.service.get(i["id"]) for i in w.service.list()]
    billed_cost = sum(Decimal(ln["provider_cost_usd"]) for d in invs for ln in d["lines"])
    assert billed_cost == sum(r.cost_usd for r in rows if r.id in claims)
    assert billed_cost + sum(r.cost_usd for r in unbilled) == expected_cost
    late = [ln for d in invs for ln in d["lines"] if ln["late_adjustment"]]
    assert {ln["late_period"] for ln in late} == {"2026-01", "2026-02"}
    assert all(ln["description"].startswith(f"Late usage from {ln['late_period']}") for ln in late)


def test_same_ledger_same_invoice(engine, w):
    """Determinism: rebuilding from the same ledger gives identical lines and totals, whatever the order
    the records were inserted in."""
    a = w.customer("acme", plan="tiered")
    for d, m in [(3, "40"), (4, "70.5"), (9, "12.25")]:
        w.usage(a, at(2026, 1, d), minutes=m, cost="0.1")
    w.usage(a, at(2026, 1, 9), "sync::nova-3", "33", "0.2")
    inv = w.service.run("2026-01").entries[0].invoice_id
    first = w.service.get(inv)
    for _ in range(3):
        w.service.run("2026-01")
        doc = w.service.get(inv)
        assert (lines(doc), doc["total"], doc["provider_cost_usd"]) == (
            lines(first),
            first["total"],
            first["provider_cost_usd"],
        )
