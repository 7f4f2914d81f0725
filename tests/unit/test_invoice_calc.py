"""The invoice's pure steps. The late-adjustment property: however a period's usage is split into what
was invoiced first and what arrived late (in any number of batches), the invoiced amounts, quantities
and provider costs add up to exactly what rating all of it at once gives — nothing lost, nothing twice."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.invoices.calc import late_lines, period_lines, totals
from keyledger.pricing.model import Period, UsageLine
from keyledger.pricing.plans import parse_plan_text

PLAN = parse_plan_text(
    """
id: t
currency: USD
mode: rate_card
base_fee: "10.00"
minimum: "3.00"
tax_percent: "7.5"
effective_from: 2025-01-01
rates:
  "streaming::nova-3":
    unit: minute
    tier_mode: graduated
    tiers: [{up_to: 100, price: "0.0210"}, {up_to: null, price: "0.0105"}]
  "sync::*":
    unit: minute
    tier_mode: volume
    tiers: [{up_to: 50, price: "0.0070"}, {up_to: null, price: "0.0040"}]
  "speak::*": {unit: 1k_characters, price: "0.0333"}
included:
  "streaming::*": 30
""",
    name="t.yaml",
    fmt="yaml",
    today=date(2026, 1, 1),
)
COST_PLUS = parse_plan_text(
    """
id: cp
currency: EUR
mode: cost_plus
markup_percent: "12.5"
effective_from: 2025-01-01
exchange_rates: {"2026-01": "0.9173"}
""",
    name="cp.yaml",
    fmt="yaml",
    today=date(2026, 1, 1),
)
JAN = Period.month("2026-01")

ITEMS = [("streaming::nova-3", "minute"), ("sync::nova-3", "minute"), ("speak::aura-2", "character")]

usage_rows = st.lists(
    st.tuples(
        st.sampled_from(ITEMS),
        st.decimals(min_value=0, max_value=400, places=3),
        st.decimals(min_value=0, max_value=5, places=4),
        st.booleans(),
    ),
    max_size=12,
).map(lambda rows: [UsageLine(i[0], i[1], q, c, byo) for i, q, c, byo in rows])


def _sum(lines, attr):
    return sum((getattr(x, attr) or Decimal(0) for x in lines), Decimal(0))


def _usage_qty(lines):
    return _sum([x for x in lines if x.line_item], "quantity")


@settings(max_examples=150, deadline=None)
@given(
    rows=usage_rows,
    cuts=st.lists(st.integers(min_value=0, max_value=12), max_size=3),
    plan=st.sampled_from([PLAN, COST_PLUS]),
)
def test_late_batches_add_up_to_rating_everything_at_once(rows, cuts, plan):
    bounds = sorted({min(c, len(rows)) for c in cuts} | {len(rows)})
    billed = rows[: bounds[0]]
    invoiced = period_lines(plan, JAN, billed)
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        batch = rows[lo:hi]
        invoiced += late_lines(plan, JAN, billed, batch)
        billed = billed + batch
    at_once = period_lines(plan, JAN, rows)
    assert _sum(invoiced, "amount") == _sum(at_once, "amount")
    assert _sum(invoiced, "provider_cost_usd") == _sum(at_once, "provider_cost_usd")
    assert _usage_qty(invoiced) == _usage_qty(at_once)
    assert all(
        x.late_adjustment and x.late_period == "2026-01"
        for x in invoiced
        if x not in period_lines(plan, JAN, rows[: bounds[0]])
    )


def test_late_lines_are_marked_and_priced_at_the_periods_tiers():
    billed = [UsageLine("streaming::nova-3", "minute", Decimal(120), Decimal("0.5"))]
    late = [UsageLine("streaming::nova-3", "minute", Decimal(20), Decimal("0.08"))]
    line, minimum = late_lines(PLAN, JAN, billed, late)
    # 30 included + 90 at tier 1 already billed (1.89); the 20 late minutes: 10 at tier 1, 10 at tier 2:
    # 2.10 + 0.11 - 1.89 = 0.32 more usage, which the minimum (3.00) top-up already billed covered.
    assert (line.amount, line.quantity, line.unit_price) == (Decimal("0.32"), Decimal(20), None)
    assert (minimum.kind, minimum.amount, minimum.late_adjustment) == ("minimum", Decimal("-0.32"), True)
    assert line.description == "Late usage from 2026-01: streaming::nova-3"
    assert (
        line.late_adjustment and line.late_period == "2026-01" and line.provider_cost_usd == Decimal("0.08")
    )
    assert late_lines(PLAN, JAN, billed, []) == []


def test_totals_round_tax_once_on_the_sum():
    lines = period_lines(PLAN, JAN, [UsageLine("sync::nova-3", "minute", Decimal("333"), Decimal(1))])
    t = totals(lines, PLAN.tax_percent, "USD")
    # 10.00 base + 333 x 0.004 = 1.332 -> 1.33, topped up to the 3.00 minimum (+1.67)
    assert t.subtotal == Decimal("13.00")
    assert t.tax == Decimal("0.98")  # 0.975, rounded half-up once, on the subtotal
    assert t.total == Decimal("13.98")
    assert t.subtotal == sum(x.amount for x in lines)
