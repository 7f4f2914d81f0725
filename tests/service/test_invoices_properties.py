"""Invoice invariants over random histories, through the real services on SQLite and PostgreSQL.

Hypothesis interleaves usage arriving for three months (in a customer time zone that is not UTC), runs
and finalizations in any order, then a final sweep. Afterwards:

- every usage record is billed by exactly one invoice (none lost, none twice);
- per period, the amounts billed for it — its own invoice's lines plus every late adjustment for it on
  later invoices — equal rating all of that period's usage at once (tiers, allowance, minimum, base fee);
- finalized invoices never changed after they were finalized;
- the same usage gives the same invoice (a twin customer with the same records inserted in another
  order and split differently gets identical lines).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keyledger.db.tables_usage import usage_records
from keyledger.invoices import store
from keyledger.invoices.model import local_month
from keyledger.pricing.model import Period, UsageLine
from keyledger.pricing.rate import rate_usage
from keyledger.pricing.service import plan_for
from tests.invoice_support import World

MONTHS = ["2026-01", "2026-02", "2026-03"]
TZ = "America/Los_Angeles"
_n = itertools.count()

record = st.tuples(
    st.integers(0, 2),  # month
    st.integers(0, 27 * 24 - 1),  # hour within the month (UTC), so some fall in the previous local month
    st.sampled_from(["streaming::nova-3", "sync::nova-3"]),
    st.integers(1, 30000),  # hundredths of a minute
)
step = st.one_of(
    st.tuples(st.just("usage"), st.lists(record, min_size=1, max_size=4)),
    st.tuples(st.just("run"), st.integers(0, 2)),
    st.tuples(st.just("finalize"), st.integers(0, 2)),  # run, then finalize the draft
)


def _created(month: int, hour: int) -> datetime:
    return datetime(2026, 1 + month, 1, tzinfo=UTC) + timedelta(hours=hour)


def _add(w: World, customer: str, rec) -> None:
    month, hour, item, hundredths = rec
    minutes = Decimal(hundredths) / 100
    w.usage(customer, _created(month, hour), item, str(minutes), str(minutes * Decimal("0.0043")))


def _attributed(w: World, customer: str) -> dict[str, Decimal]:
    """Per period: what the customer's live invoices bill for it (own lines + late adjustments)."""
    out: dict[str, Decimal] = {}
    for inv in w.service.list(customer=customer):
        if inv["status"] == "void":
            continue
        for line in w.service.get(inv["id"])["lines"]:
            period = line["late_period"] or inv["period"]
            out[period] = out.get(period, Decimal(0)) + Decimal(line["amount"])
    return out


def _at_once(w: World, customer: str) -> dict[str, Decimal]:
    with w.engine.connect() as conn:
        rows = conn.execute(
            select(
                usage_records.c.created,
                usage_records.c.line_item,
                usage_records.c.quantity,
                usage_records.c.cost_usd,
            ).where(usage_records.c.customer_id == customer)
        ).all()
        plan = plan_for(conn, "tiered", Period.month("2026-01").start).plan
    out = {}
    for key in MONTHS:
        usage = [
            UsageLine(r.line_item, "minute", r.quantity, r.cost_usd)
            for r in rows
            if local_month(r.created, TZ) == key
        ]
        out[key] = rate_usage(plan, Period.month(key), usage).subtotal
    return out


def test_random_histories_bill_everything_once_and_exactly(engine):
    w = World(engine)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(steps=st.lists(step, min_size=4, max_size=20))
    def history(steps):
        c = w.customer(f"h{next(_n)}", plan="tiered", tz=TZ)
        frozen: dict[str, dict] = {}
        for kind, arg in steps:
            if kind == "usage":
                for rec in arg:
                    _add(w, c, rec)
            elif kind == "run":
                w.service.run(MONTHS[arg], customer=c)
            else:
                w.service.run(MONTHS[arg], customer=c)
                live = [i for i in w.service.list(customer=c, period=MONTHS[arg]) if i["status"] == "draft"]
                for inv in live:
                    w.service.finalize(inv["id"])
                    frozen[inv["id"]] = w.service.get(inv["id"])
        for key in MONTHS:  # the sweep: every month run and finalized, in order
            for e in w.service.run(key, customer=c, finalize=True).entries:
                assert e.outcome in ("finalized", "unchanged"), e
                if e.outcome == "finalized":
                    frozen[e.invoice_id] = w.service.get(e.invoice_id)
        w.service.run("2026-04", customer=c)  # picks up whatever arrived late for March
        for inv_id, doc in frozen.items():
            assert w.service.get(inv_id) == doc
        with engine.connect() as conn:
            ids = {
                r[0]
                for r in conn.execute(
                    select(usage_records.c.id, usage_records.c.created).where(
                        usage_records.c.customer_id == c
                    )
                )
                if local_month(r[1], TZ) in MONTHS
            }
            claimed = set(store.claimed_ids(conn))
        assert ids <= claimed
        attributed, at_once = _attributed(w, c), _at_once(w, c)
        assert {k: attributed.get(k, Decimal(0)) for k in MONTHS} == at_once

    history()


def test_same_usage_same_invoice(engine):
    w = World(engine)
    a = w.customer("twin-a", plan="tiered", tz=TZ)
    b = w.customer("twin-b", plan="tiered", tz=TZ)
    recs = [
        (0, h * 7 % 640, item, 100 + h * 37)
        for h, item in enumerate(["streaming::nova-3", "sync::nova-3"] * 12)
    ]
    for rec in recs:
        _add(w, a, rec)
    for rec in reversed(recs):  # same usage, other order, each record split in two
        month, hour, item, hundredths = rec
        _add(w, b, (month, hour, item, hundredths // 2))
        _add(w, b, (month, hour, item, hundredths - hundredths // 2))
    docs = [w.service.get(w.service.run("2026-01", customer=c).entries[0].invoice_id) for c in (a, b)]

    def comparable(doc):
        return (
            [{k: v for k, v in ln.items() if k != "provider_cost_usd"} for ln in doc["lines"]],
            doc["subtotal"],
            doc["tax"],
            doc["total"],
        )

    assert comparable(docs[0]) == comparable(docs[1])
    assert docs[0]["provider_cost_usd"] == docs[1]["provider_cost_usd"]
