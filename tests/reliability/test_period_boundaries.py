"""Period boundaries with the injected clock, on SQLite and PostgreSQL: month ends in UTC and in customer
time zones with odd offsets (Asia/Kolkata +05:30, Pacific/Chatham +12:45/+13:45), DST changes inside a
period (America/New_York, Europe/Berlin, Chatham), the leap day 2028-02-29.

Records one microsecond either side of each local midnight land in exactly one period; a late record
after the invoice is finalized goes onto the next invoice as an adjustment line and leaves the finalized
invoice unchanged; budgets reset at the instant of local midnight. The expected period bounds are written
out by hand below (and checked against zoneinfo); where a record belongs is computed with zoneinfo in
the test, never with keyledger's own period helpers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_invoices import invoice_lines, invoices
from keyledger.db.tables_notifications import webhook_events
from keyledger.db.tables_usage import usage_records
from keyledger.invoices import store as invoice_store
from keyledger.provider.port import UsageRecord
from keyledger.usage import store as usage_store
from keyledger.usage.service import SyncService
from keyledger.worker.jobs import run_closed_invoices
from tests.invoice_support import World
from tests.usage_support import inject, ledger_rows

from ._concurrency_support import assert_ledger_is_dgemu, iso

US = timedelta(microseconds=1)
PRICE = Decimal("0.0100")  # the FLAT plan's streaming::nova-3 price per minute


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    tz: str
    period: str
    starts_at: datetime  # local midnight on the 1st, as UTC (worked out by hand)
    ends_at: datetime  # local midnight on the 1st of the next month
    inside: datetime  # an instant of note inside the period (a DST change, the leap day)

    @property
    def id(self) -> str:
        return f"{self.tz}-{self.period}"


CASES = [
    # leap day: February 2028 has 29 days, in UTC and in Los Angeles (PST, UTC-8)
    Case("UTC", "2028-02", utc(2028, 2, 1), utc(2028, 3, 1), utc(2028, 2, 29, 12)),
    Case("America/Los_Angeles", "2028-02", utc(2028, 2, 1, 8), utc(2028, 3, 1, 8), utc(2028, 2, 29, 20)),
    # +05:30 all year: January starts Dec 31 18:30 UTC
    Case("Asia/Kolkata", "2026-01", utc(2025, 12, 31, 18, 30), utc(2026, 1, 31, 18, 30), utc(2026, 1, 1)),
    # +13:45 in January (Chatham summer); DST ends Apr 5 03:45 local (+13:45 -> +12:45), starts Sep 27
    Case("Pacific/Chatham", "2026-01", utc(2025, 12, 31, 10, 15), utc(2026, 1, 31, 10, 15), utc(2026, 1, 1)),
    Case(
        "Pacific/Chatham", "2026-04", utc(2026, 3, 31, 10, 15), utc(2026, 4, 30, 11, 15), utc(2026, 4, 4, 14)
    ),
    Case(
        "Pacific/Chatham", "2026-09", utc(2026, 8, 31, 11, 15), utc(2026, 9, 30, 10, 15), utc(2026, 9, 26, 14)
    ),
    # New York: EST -> EDT on Mar 8 at 02:00 local; EDT -> EST on Nov 1 at 02:00 local (the 1st itself)
    Case("America/New_York", "2026-03", utc(2026, 3, 1, 5), utc(2026, 4, 1, 4), utc(2026, 3, 8, 7)),
    Case("America/New_York", "2026-11", utc(2026, 11, 1, 4), utc(2026, 12, 1, 5), utc(2026, 11, 1, 6)),
    # Berlin: CET -> CEST on Mar 29 at 01:00 UTC; CEST -> CET on Oct 25 at 01:00 UTC
    Case("Europe/Berlin", "2026-03", utc(2026, 2, 28, 23), utc(2026, 3, 31, 22), utc(2026, 3, 29, 1)),
    Case("Europe/Berlin", "2026-10", utc(2026, 9, 30, 22), utc(2026, 10, 31, 23), utc(2026, 10, 25, 1)),
]


def local_month(at: datetime, tz: str) -> str:
    """The oracle: which calendar month of ``tz`` an instant falls in (zoneinfo, nothing of ours)."""
    local = at.astimezone(ZoneInfo(tz))
    return f"{local.year:04d}-{local.month:02d}"


def shift(period: str, months: int) -> str:
    y, m = map(int, period.split("-"))
    y, m = divmod(y * 12 + m - 1 + months, 12)
    return f"{y:04d}-{m + 1:02d}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hand_written_bounds_agree_with_zoneinfo(case):
    """The constants above are right (so the tests below compare against a correct oracle)."""
    z = ZoneInfo(case.tz)
    y, m = map(int, case.period.split("-"))
    ny, nm = map(int, shift(case.period, 1).split("-"))
    assert datetime(y, m, 1, tzinfo=z).astimezone(UTC) == case.starts_at
    assert datetime(ny, nm, 1, tzinfo=z).astimezone(UTC) == case.ends_at
    assert local_month(case.starts_at - US, case.tz) == shift(case.period, -1)
    assert local_month(case.ends_at, case.tz) == shift(case.period, 1)
    assert case.starts_at < case.inside < case.ends_at


def boundary_instants(case: Case) -> list[datetime]:
    """One microsecond either side of both local midnights, both UTC midnights, and the instant of note."""
    month_utc = utc(*map(int, case.period.split("-")), 1)
    next_utc = utc(*map(int, shift(case.period, 1).split("-")), 1)
    out = [
        case.starts_at - US,
        case.starts_at,
        case.inside,
        case.ends_at - US,
        case.ends_at,
        month_utc - US,
        month_utc,
        next_utc - US,
        next_utc,
    ]
    return sorted(set(out))


def invoice_rows(engine, customer_id: str) -> dict[str, dict]:
    with engine.connect() as db:
        rows = db.execute(select(invoices).where(invoices.c.customer_id == customer_id)).mappings().all()
    return {r["period"]: dict(r) for r in rows}


def lines_of(engine, invoice_id: str) -> list[dict]:
    with engine.connect() as db:
        q = select(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id)
        return [dict(r) for r in db.execute(q.order_by(invoice_lines.c.position)).mappings()]


def claims(engine) -> dict[str, tuple[str, bool]]:
    """request id -> (invoice id, late) for every billed record."""
    with engine.connect() as db:
        request = dict(db.execute(select(usage_records.c.id, usage_records.c.request_id)).all())
        return {request[rid]: (inv, late) for rid, inv, late in invoice_store.claimed_records(db)}


def test_invoices_at_period_boundaries_and_a_late_record(engine):
    """Every case at once (one customer each, one database): cheaper than a database per case."""
    w = World(engine, at=max(c.ends_at for c in CASES) + timedelta(days=40))
    for n, case in enumerate(CASES):
        check_invoices(w, case, w.customer(f"edge{n}", tz=case.tz))


def check_invoices(w: World, case: Case, cid: str) -> None:
    engine = w.engine
    prev, nxt = shift(case.period, -1), shift(case.period, 1)
    # Record i bills 2**i minutes, so each invoice's minutes say exactly which records it holds.
    expected: dict[str, int] = {prev: 0, case.period: 0, nxt: 0}
    rid_period: dict[str, str] = {}
    for i, at in enumerate(boundary_instants(case)):
        minutes = 2**i
        rid_period[w.usage(cid, at, minutes=str(minutes))] = local_month(at, case.tz)
        expected[local_month(at, case.tz)] += minutes
    for p in (prev, case.period, nxt):
        w.service.run(p, customer=cid)

    rows = invoice_rows(engine, cid)
    bounds = (rows[case.period]["starts_at"], rows[case.period]["ends_at"])
    assert bounds == (case.starts_at, case.ends_at), case.id
    for p in (prev, case.period, nxt):
        usage = [x for x in lines_of(engine, rows[p]["id"]) if x["kind"] == "usage"]
        assert sum(x["quantity"] for x in usage) == expected[p], (case.id, p)
        assert rows[p]["subtotal"] == expected[p] * PRICE, (case.id, p)
    # Every record is billed exactly once, by the invoice of the month it falls in locally.
    by_period = {r["id"]: p for p, r in rows.items()}
    billed = {rid: by_period.get(inv) for rid, (inv, _) in claims(engine).items() if rid in rid_period}
    assert billed == rid_period, case.id

    # Finalize the period; a record of it arriving afterwards goes onto the next invoice, marked late.
    done = w.service.finalize(rows[case.period]["id"])
    before = w.service.get(done["id"])
    late_minutes = 2 ** len(rid_period)
    w.clock.advance(timedelta(hours=1))
    late = w.usage(cid, case.inside, minutes=str(late_minutes))
    assert [e.outcome for e in w.service.run(case.period, customer=cid).entries] == ["unchanged"]
    w.service.run(nxt, customer=cid)
    assert w.service.get(done["id"]) == before, case.id  # the finalized invoice did not change
    rows = invoice_rows(engine, cid)
    nxt_lines = lines_of(engine, rows[nxt]["id"])
    adjust = [x for x in nxt_lines if x["late_adjustment"]]
    assert [(x["late_period"], x["quantity"], x["amount"]) for x in adjust] == [
        (case.period, late_minutes, late_minutes * PRICE)
    ], case.id
    regular = sum(x["quantity"] for x in nxt_lines if x["kind"] == "usage" and not x["late_adjustment"])
    assert regular == expected[nxt], case.id
    assert rows[nxt]["subtotal"] == (expected[nxt] + late_minutes) * PRICE, case.id
    assert claims(engine)[late] == (rows[nxt]["id"], True), case.id


_n = itertools.count(1)


def spend_at(w: World, customer_id: str, at: datetime, usd: Decimal) -> None:
    """A record with a given provider cost (what budgets count), through the ledger's bulk insert."""
    rid = f"bud-{next(_n)}"
    key = w.accessor[customer_id]
    rec = UsageRecord(rid, key, at, "listen", "sync", "nova-3", "sync::nova-3", "minute", Decimal(1), usd)
    with w.engine.begin() as db:
        usage_store.insert_records(
            db,
            connection_id=w.managed,
            records=[rec],
            keys_by_accessor=usage_store.key_map(db, w.managed),
            batch=f"b-{rid}",
            synced_at=w.clock.now(),
        )


BUDGET_PERIODS = ("2026-01", "2026-04", "2026-11", "2028-02")
BUDGET_CASES = [c for c in CASES if c.tz != "UTC" and c.period in BUDGET_PERIODS]


def test_budget_periods_reset_at_local_midnight(engine):
    w = World(engine, at=min(c.starts_at for c in BUDGET_CASES) - timedelta(days=3))
    budgets = BudgetService(SimpleNamespace(engine=engine, clock=w.clock))
    for n, case in enumerate(BUDGET_CASES):
        cid = w.customer(f"budget{n}", tz=case.tz)
        budgets.set(cid, limit="10000", thresholds="50,80", action="notify")
        check_budget(w, budgets, case, cid)


def check_budget(w: World, budgets: BudgetService, case: Case, cid: str) -> None:
    # USD 2**i per instant, so each period's spend says which records it counted.
    spent: dict[str, Decimal] = {}
    for i, at in enumerate(boundary_instants(case)):
        spend_at(w, cid, at, Decimal(2**i))
        key = local_month(at, case.tz)
        spent[key] = spent.get(key, Decimal(0)) + Decimal(2**i)
    big = Decimal(6000)  # with the boundary records (< 512 in all): between 50 % and 80 % of the limit
    spend_at(w, cid, case.starts_at - timedelta(days=1), big)
    spent[shift(case.period, -1)] += big

    w.clock.set(case.starts_at - US)
    last = budgets.evaluate(cid)
    assert (last.period, last.spent, last.fired) == (
        shift(case.period, -1),
        spent[shift(case.period, -1)],
        (50,),
    )
    w.clock.set(case.starts_at)  # the instant of local midnight: a new period, nothing fired yet
    first = budgets.evaluate(cid)
    assert (first.period, first.spent, first.fired, first.state) == (
        case.period,
        spent[case.period],
        (),
        "ok",
    )
    w.clock.set(case.ends_at - US)
    assert budgets.evaluate(cid).period == case.period, case.id
    w.clock.set(case.ends_at)
    after = budgets.evaluate(cid)
    assert (after.period, after.spent) == (shift(case.period, 1), spent[shift(case.period, 1)]), case.id


SYNCED = [c for c in CASES if c.period < "2026-11"]  # in the past for dgemu, whose clock is real


def test_synced_from_dgemu_each_boundary_record_lands_in_one_invoice(db_url, engine, dgemu, tmp_path):
    """Through a real sync: dgemu's records at the boundary instants reach the ledger exactly (same ids,
    same microsecond), and each is billed once, by the invoice of its local month."""
    w = World(engine, at=utc(2025, 12, 1))
    rt = Runtime(
        settings=Settings(database_url=db_url, secret_key=generate_key(), provider_max_retries=1),
        environ={"DEEPGRAM_API_KEY": dgemu.owner_key},
    )
    rt.clock = w.clock
    try:
        con = ConnectionService(rt, environ=rt.environ).add(
            "dg", project_id=dgemu.project_id, base_url=dgemu.base_url
        )
        expected: dict[str, tuple[str, str, datetime]] = {}  # request id -> customer, local month, instant
        for n, case in enumerate(SYNCED):
            cust = CustomerService(rt).add(case.id, external_id=f"c{n}", plan="flat", timezone=case.tz)
            key = KeyService(rt).create(f"c{n}", connection="dg").key.api_key_id
            items = []
            for i, at in enumerate(boundary_instants(case)):
                rid = f"{n}-{i}"
                items.append(
                    {
                        "request_id": rid,
                        "api_key_id": key,
                        "created": iso(at),
                        "endpoint": "listen",
                        "method": "sync",
                        "model": "nova-3",
                        "duration_seconds": 60 * 2**i,
                    }
                )
                expected[rid] = (cust.id, local_month(at, case.tz), at)
            inject(dgemu, items)
        sync = SyncService(rt.engine, rt.settings, rt.clock, lambda c: rt.provider_for(c.id))
        for case in sorted(SYNCED, key=lambda c: c.starts_at):  # within Deepgram's 90-day retention
            w.clock.set(case.ends_at + timedelta(days=5))
            last = max(boundary_instants(case))
            sync.sync(connection="dg", since=case.starts_at - timedelta(days=2), until=last + US)
        assert_ledger_is_dgemu(engine, dgemu, {con.id: (dgemu.project_id, dgemu.owner_key)})
        ledger = {r["request_id"]: (r["customer_id"], r["created"]) for r in ledger_rows(engine, con.id)}
        assert ledger == {rid: (c, at) for rid, (c, _, at) in expected.items()}

        for cust_id, month in {(c, m) for c, m, _ in expected.values()}:
            w.service.run(month, customer=cust_id)
        periods = {
            row["id"]: (cust_id, period)
            for cust_id in {c for c, _, _ in expected.values()}
            for period, row in invoice_rows(engine, cust_id).items()
        }
        billed = {rid: periods[inv] for rid, (inv, late) in claims(engine).items() if not late}
        assert billed == {rid: (c, m) for rid, (c, m, _) in expected.items()}
    finally:
        rt.engine.dispose()


@pytest.mark.parametrize("case", BUDGET_CASES, ids=lambda c: c.id)
def test_worker_invoices_a_period_once_its_local_end_plus_grace_has_passed(db_url, case):
    """The worker's invoice job: not a microsecond before local month end + grace; then once."""
    grace = timedelta(days=2)
    rt = Runtime(
        settings=Settings(
            database_url=db_url, secret_key=generate_key(), worker_invoice_grace_seconds=2 * 24 * 3600
        ),
        environ={},
    )
    try:
        w = World(rt.engine, at=case.starts_at - timedelta(days=10))
        rt.clock = w.clock
        cid = w.customer("edge", tz=case.tz)
        w.usage(cid, case.inside, minutes="3")
        w.clock.set(case.ends_at + grace - US)
        assert run_closed_invoices(rt) == []
        w.clock.set(case.ends_at + grace)
        [inv] = run_closed_invoices(rt)
        w.clock.advance(timedelta(hours=1))
        assert run_closed_invoices(rt) == []
        rows = invoice_rows(rt.engine, cid)
        assert list(rows) == [case.period] and rows[case.period]["id"] == inv
        assert rows[case.period]["status"] == "finalized"
        assert rows[case.period]["subtotal"] == 3 * PRICE
        with rt.engine.connect() as db:
            sent = db.execute(
                select(webhook_events.c.type).where(webhook_events.c.type == "invoice.finalized")
            )
            assert len(sent.all()) == 1
    finally:
        rt.engine.dispose()


def test_worker_runs_each_due_period_once_for_all_its_customers(db_url):
    """Customers whose local months close at different instants are due for different periods at once:
    the worker invoices each customer's own closed month (one batched run per period), then nothing."""
    rt = Runtime(
        settings=Settings(database_url=db_url, secret_key=generate_key(), worker_invoice_grace_seconds=0),
        environ={},
    )
    try:
        w = World(rt.engine, at=datetime(2026, 9, 20, tzinfo=UTC))
        rt.clock = w.clock
        due = {
            "utc1": ("UTC", "2026-10"),
            "utc2": ("UTC", "2026-10"),
            "kiri": ("Pacific/Kiritimati", "2026-11"),
        }
        ids = {ext: w.customer(ext, tz=tz) for ext, (tz, _) in due.items()}
        for cid in ids.values():
            w.usage(cid, datetime(2026, 10, 15, tzinfo=UTC), minutes="3")
            w.usage(cid, datetime(2026, 11, 15, tzinfo=UTC), minutes="5")
        w.clock.set(datetime(2026, 11, 30, 12, tzinfo=UTC))  # Kiritimati (UTC+14) is in December already
        done = run_closed_invoices(rt)
        assert run_closed_invoices(rt) == []
        rows = {ext: invoice_rows(rt.engine, cid) for ext, cid in ids.items()}
        assert {ext: list(r) for ext, r in rows.items()} == {ext: [p] for ext, (_, p) in due.items()}
        assert sorted(done) == sorted(r[due[ext][1]]["id"] for ext, r in rows.items())
        assert {r[due[ext][1]]["status"] for ext, r in rows.items()} == {"finalized"}
    finally:
        rt.engine.dispose()
