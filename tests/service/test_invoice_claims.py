"""Usage claims are rectangles (time x record id): they never overlap, and together they bill every
record of an invoiced window exactly once.

- ``claim_gaps`` (pure, Hypothesis): whatever claims exist, the new rectangles overlap neither each other
  nor them, and with them cover the window up to the high-water mark exactly.
- Random sequences of runs, finalizes, voids, late records and time-zone changes on SQLite and
  PostgreSQL: no record is ever covered by two claims, and once every period is run again (and a later
  period bills the late usage of the issued ones), every record of a live invoice's window is billed
  exactly once, by an invoice of its customer.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_usage import usage_records
from keyledger.invoices import store
from keyledger.invoices.model import Rect, claim_gaps
from keyledger.invoices.service import InvoiceService
from tests.invoice_support import World

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMES, IDS = 12, 10  # the pure test's grid: instants T0 + k minutes, record ids 1..IDS


def _t(k: int) -> datetime:
    return T0 + timedelta(minutes=k)


def _covers(r: Rect, k: int, rid: int) -> bool:
    return r.lo <= _t(k) < r.hi and r.after < rid <= r.upto


window = st.tuples(st.integers(0, TIMES - 1), st.integers(1, TIMES), st.integers(0, IDS)).filter(
    lambda w: w[0] < w[1]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(window, st.booleans()), min_size=1, max_size=12))
def test_claim_gaps_never_overlap_and_cover_the_window(steps):
    live: list[list[Rect]] = []  # one list per claiming "invoice"; a void deletes one
    for (lo, hi, hw), void in steps:
        if void and live:
            live.pop(0)
            continue
        existing = [r for group in live for r in group]
        new = claim_gaps(_t(lo), _t(hi), hw, existing)
        for r in new:
            assert r.lo < r.hi and r.after < r.upto <= hw
        for k in range(TIMES):
            for rid in range(1, IDS + 1):
                old_n = sum(_covers(r, k, rid) for r in existing)
                new_n = sum(_covers(r, k, rid) for r in new)
                assert old_n <= 1 and new_n <= 1 and old_n + new_n <= 1
                if lo <= k < hi and rid <= hw:
                    assert old_n + new_n == 1
                elif old_n == 0:
                    assert new_n == 0  # nothing outside the window or above the mark
        live.append(new)


def test_no_earlier_claim_is_one_rectangle():
    assert claim_gaps(_t(0), _t(5), 7, []) == [Rect(_t(0), _t(5), 0, 7)]
    assert claim_gaps(_t(0), _t(5), 0, []) == []
    # Late usage of an issued window: the gap above its claim's mark.
    assert claim_gaps(_t(0), _t(5), 9, [Rect(_t(0), _t(5), 0, 7)]) == [Rect(_t(0), _t(5), 7, 9)]


PERIODS = ("2026-01", "2026-02", "2026-03")
ZONES = ("UTC", "Asia/Tokyo", "America/New_York")


def _live_windows(engine, customer_id: str) -> list[tuple[str, datetime, datetime]]:
    with engine.connect() as db:
        q = select(invoices.c.id, invoices.c.starts_at, invoices.c.ends_at).where(
            invoices.c.customer_id == customer_id, invoices.c.status != "void"
        )
        return [(r[0], r[1], r[2]) for r in db.execute(q)]


def _check_no_record_billed_twice(engine) -> None:
    with engine.connect() as db:
        rows = store.claimed_records(db)
        owner = dict(db.execute(select(invoices.c.id, invoices.c.customer_id)).all())
        status = dict(db.execute(select(invoices.c.id, invoices.c.status)).all())
        customer_of = dict(db.execute(select(usage_records.c.id, usage_records.c.customer_id)).all())
    twice = [rid for rid, n in Counter(rid for rid, _, _ in rows).items() if n > 1]
    assert not twice, f"records billed twice: {twice}"
    for rid, inv, _ in rows:
        assert owner[inv] == customer_of[rid]
        assert status[inv] != "void"


@pytest.mark.parametrize("seed", range(6))
def test_random_runs_voids_late_records_and_zone_changes_bill_each_record_once(engine, seed):
    rnd = random.Random(seed)
    w = World(engine, at=datetime(2026, 5, 20, 12, tzinfo=UTC))
    service = InvoiceService(engine, w.clock, batch_size=rnd.choice((1, 2, 1000)))
    cs = [w.customer(f"s{seed}-{i}", tz=rnd.choice(ZONES)) for i in range(3)]

    def record(c: str) -> None:
        # Near month edges often (time zones move them across the boundary).
        day = rnd.choice((1, 1, 2, 15, 28, 30, 31))
        month = rnd.choice((1, 2, 3))
        try:
            at = datetime(2026, month, day, rnd.randrange(24), rnd.randrange(60), tzinfo=UTC)
        except ValueError:
            at = datetime(2026, month, 28, 23, 30, tzinfo=UTC)
        w.usage(c, at, minutes=str(rnd.randint(1, 30)))

    for _ in range(40):
        c = rnd.choice(cs)
        op = rnd.random()
        if op < 0.4:
            record(c)
        elif op < 0.65:
            if rnd.random() < 0.5:
                service.run(rnd.choice(PERIODS), customer=c)
            else:
                service.run(rnd.choice(PERIODS))
        elif op < 0.8:
            drafts = [i for i in service.list(customer=c, status="draft")]
            if drafts:
                service.finalize(rnd.choice(drafts)["id"])
        elif op < 0.9:
            final = service.list(customer=c, status="finalized")
            if final:
                service.void(rnd.choice(final)["id"], reason="test")
        else:
            w.customers.update(c, timezone=rnd.choice(ZONES))
        _check_no_record_billed_twice(engine)

    for period in (*PERIODS, "2026-04"):  # 2026-04 bills what is late in the issued periods
        service.run(period)
    _check_no_record_billed_twice(engine)
    with engine.connect() as db:
        claimed = {rid: inv for rid, inv, _ in store.claimed_records(db)}
        records = db.execute(select(usage_records.c.id, usage_records.c.customer_id, usage_records.c.created))
        records = [(r[0], r[1], r[2]) for r in records]
    for c in cs:
        windows = _live_windows(engine, c)
        for rid, cid, created in records:
            if cid == c and any(lo <= created < hi for _, lo, hi in windows):
                assert rid in claimed, (seed, rid, created)
