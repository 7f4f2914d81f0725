"""Properties of issue 4 that the other pricing/invoice tests did not state (Hypothesis, pure code):

- an invoice's total is the sum of its rounded lines plus tax, with late adjustments included;
- graduated pricing is monotonic and continuous at every tier edge (approached from below and above);
- volume pricing matches its definition, also for several line items sharing one rate;
- pass-through lines equal the provider cost within half a minor unit each (the documented bound);
- rebuilding from the same ledger (any order, any split of the rows) gives the same invoice;
- no float anywhere: lines, totals and their exported form.
"""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.core.money import minor_units, round_money
from keyledger.invoices.calc import Line, Totals, late_lines, period_lines, totals
from keyledger.pricing.model import Period, Tier, UsageLine
from keyledger.pricing.plans import plan_from_dict
from keyledger.pricing.rate import rate_usage
from keyledger.pricing.rates import graduated
from tests.unit.test_pricing_rate import fmt, plans, quantities, tiers, usage_lines

JAN = Period.month("2026-01")
EPS = D("0.0001")  # the quantities' resolution


def assert_no_float(obj) -> None:
    if isinstance(obj, float):
        raise AssertionError(f"float found: {obj!r}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert_no_float(k)
            assert_no_float(v)
    elif isinstance(obj, tuple | list):
        for item in obj:
            assert_no_float(item)
    elif hasattr(obj, "__dataclass_fields__"):
        for f in fields(obj):
            assert_no_float(getattr(obj, f.name))


def tier_plan(ts: list[dict], mode: str):
    return plan_from_dict({"id": "t", "currency": "USD", "mode": "rate_card", "effective_from": "2026-01-01",
                           "rates": {"sync::*": {"unit": "minute", "tiers": ts, "tier_mode": mode}}})


def exact_price(plan, q: D, *items: str) -> D:
    """The unrounded price of ``q`` (split evenly-ish over ``items``): sum of quantity x unit price."""
    rated = rate_usage(plan, JAN, [(i, "minute", q, D(0)) for i in items or ("sync::nova-3",)])
    return sum((ln.quantity * ln.unit_price for ln in rated.lines if ln.line_item), D(0))


# --------------------------------------------------------------------------- totals


@settings(max_examples=200, deadline=None)
@given(plans(), usage_lines, usage_lines)
def test_invoice_total_is_the_sum_of_its_rounded_lines_plus_tax(p, usage, late):
    """The invoice of a period (its own lines plus late adjustments of an earlier one) totals exactly."""
    lines = period_lines(p, JAN, usage) + late_lines(p, JAN, usage, late)
    t = totals(lines, p.tax_percent, p.currency)
    for line in lines:
        assert line.amount == round_money(line.amount, p.currency), line
    assert t.subtotal == sum((ln.amount for ln in lines), D(0))
    assert t.tax == round_money(t.subtotal * p.tax_percent / 100, p.currency)
    assert t.tax == round_money(t.tax, p.currency)
    assert t.total == t.subtotal + t.tax
    assert t.provider_cost_usd == sum((ln.provider_cost_usd for ln in lines), D(0))
    assert_no_float((lines, t))
    assert_no_float([ln.to_dict(p.currency) for ln in lines])
    exported = [v for ln in lines for v in ln.to_dict(p.currency).values()]
    assert all(isinstance(v, str | bool | type(None)) for v in exported)


# --------------------------------------------------------------------------- graduated


@settings(max_examples=200, deadline=None)
@given(tiers(), quantities, quantities)
def test_graduated_is_monotonic_and_continuous_at_every_tier_edge(ts, q1, q2):
    p = tier_plan(ts, "graduated")
    lo, hi = sorted([q1, q2])
    assert exact_price(p, lo) <= exact_price(p, hi)
    # Two line items of one rate share its tiers: as one quantity of their sum.
    assert exact_price(p, lo, "sync::nova-2", "sync::nova-3") == exact_price(p, lo * 2)
    assert rate_usage(p, JAN, [("sync::nova-3", "minute", lo, D(0))]).total <= rate_usage(
        p, JAN, [("sync::nova-3", "minute", hi, D(0))]).total
    rate_tiers = p.rates[0].tiers
    for n, tier in enumerate(rate_tiers[:-1]):
        edge = tier.up_to
        below, at, above = (exact_price(p, q) for q in (edge - EPS, edge, edge + EPS))
        # From below, the last unit is priced by the tier ending at the edge; from above, by the next one:
        # the price function has no jump at the edge (both one-sided limits equal price(edge)).
        assert at - below == EPS * tier.price
        assert above - at == EPS * rate_tiers[n + 1].price
        assert below <= at <= above
        # And the segments of the edge quantity fill the tiers up to it exactly.
        assert sum((s.quantity for s in graduated.segments(edge, rate_tiers)), D(0)) == edge


@settings(max_examples=100, deadline=None)
@given(tiers(), quantities, st.decimals(min_value=0, max_value=1, places=4))
def test_graduated_rounded_amount_moves_by_at_most_a_cent_plus_the_units_price_at_an_edge(ts, q, frac):
    p = tier_plan(ts, "graduated")
    for tier in p.rates[0].tiers[:-1]:
        edge = tier.up_to
        delta = frac * EPS * 10
        a = rate_usage(p, JAN, [("sync::nova-3", "minute", edge, D(0))]).total
        b = rate_usage(p, JAN, [("sync::nova-3", "minute", edge + delta, D(0))]).total
        assert D(0) <= b - a <= delta * max(t.price for t in p.rates[0].tiers) + D("0.01")


# --------------------------------------------------------------------------- volume


def reached(q: D, ts: tuple[Tier, ...]) -> D:
    """The definition: the first tier whose (inclusive) up_to is at least q prices every unit."""
    for t in ts:
        if t.up_to is None or q <= t.up_to:
            return t.price
    raise AssertionError("no unbounded tier")


@settings(max_examples=200, deadline=None)
@given(tiers(), st.lists(quantities, min_size=1, max_size=3))
def test_volume_pricing_matches_its_definition(ts, qs):
    p = tier_plan(ts, "volume")
    items = [f"sync::model-{i}" for i in range(len(qs))]
    rated = rate_usage(p, JAN, [(i, "minute", q, D(0)) for i, q in zip(items, qs, strict=True)])
    price = reached(sum(qs, D(0)), p.rates[0].tiers)  # the tier reached by everything the rate prices
    by_item = {ln.line_item: ln for ln in rated.lines if ln.line_item}
    for item, q in zip(items, qs, strict=True):
        line = by_item[item]
        assert line.quantity == q
        assert line.amount == round_money(q * price, "USD")
        if q:
            assert line.unit_price == price
    assert rated.subtotal == sum((round_money(q * price, "USD") for q in qs), D(0))
    # At an edge itself the lower tier still applies (bounds are inclusive); just above, the next one.
    for n, t in enumerate(p.rates[0].tiers[:-1]):
        (at,) = rate_usage(p, JAN, [("sync::x", "minute", t.up_to, D(0))]).lines
        (above,) = rate_usage(p, JAN, [("sync::x", "minute", t.up_to + EPS, D(0))]).lines
        assert at.unit_price == t.price and above.unit_price == p.rates[0].tiers[n + 1].price


# --------------------------------------------------------------------------- pass-through


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["USD", "EUR", "JPY", "KWD"]),
    st.decimals(min_value="0.0001", max_value=200, places=4),
    usage_lines,
)
def test_pass_through_equals_provider_cost_within_half_a_minor_unit_per_line(currency, fx, usage):
    p = plan_from_dict({"id": "pt", "currency": currency, "mode": "pass_through",
                        "effective_from": "2026-01-01", "exchange_rates": {"2026-01": fmt(fx)}})
    fx = D(1) if currency == "USD" else fx
    half = D(1).scaleb(-minor_units(currency)) / 2
    lines = [ln for ln in period_lines(p, JAN, usage) if ln.kind == "usage"]
    for ln in lines:
        assert abs(ln.amount - ln.provider_cost_usd * fx) <= half, ln
    billed = sum((u.provider_cost_usd for u in usage if not u.byo), D(0))
    assert sum((ln.provider_cost_usd for ln in lines), D(0)) == billed
    invoiced = sum((ln.amount for ln in lines), D(0))
    assert abs(invoiced - billed * fx) <= half * len(lines)


# --------------------------------------------------------------------------- rebuild


@settings(max_examples=150, deadline=None)
@given(plans(), usage_lines, usage_lines, st.randoms(use_true_random=False), st.data())
def test_rebuilding_from_the_same_ledger_gives_the_same_invoice(p, usage, late, rnd, data):
    def build(period_usage, late_usage) -> tuple[list[Line], Totals]:
        lines = period_lines(p, JAN, period_usage) + late_lines(p, JAN, period_usage, late_usage)
        return lines, totals(lines, p.tax_percent, p.currency)

    first = build(usage, late)
    assert build(usage, late) == first  # the same ledger, again
    shuffled, late_shuffled = list(usage), list(late)
    rnd.shuffle(shuffled)
    rnd.shuffle(late_shuffled)
    assert build(shuffled, late_shuffled) == first  # rows in another order
    split = []
    for u in usage:  # each row split in two (as the ledger might hold it)
        q = data.draw(st.decimals(min_value=0, max_value=u.quantity, places=4))
        c = data.draw(st.decimals(min_value=0, max_value=u.provider_cost_usd, places=6))
        split += [UsageLine(u.line_item, u.unit, q, c, u.byo),
                  UsageLine(u.line_item, u.unit, u.quantity - q, u.provider_cost_usd - c, u.byo)]
    assert build(split, late) == first
