"""Rating a period's usage under a plan: lines, included allowances, tiers, minimum, tax, currencies, BYO."""

from dataclasses import fields
from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.core.errors import Invalid
from keyledger.core.money import round_money
from keyledger.pricing.model import Period, Plan, UsageLine
from keyledger.pricing.plans import parse_plan_text, plan_from_dict
from keyledger.pricing.rate import rate_usage

JAN = Period.month("2026-01")


def plan(text: str) -> Plan:
    return parse_plan_text(text, name="p.yaml", fmt="yaml", today=date(2026, 1, 1))


def by_kind(rated, kind):
    return [line for line in rated.lines if line.kind == kind]


PASS = plan("id: at-cost\ncurrency: USD\nmode: pass_through\n")
COST_PLUS_EUR = plan(
    'id: eu\ncurrency: EUR\nmode: cost_plus\nmarkup_percent: 25\nexchange_rates: {"2026-01": "0.92"}\n'
)
CARD = plan("""
id: card
currency: USD
mode: rate_card
rates:
  "streaming::nova-3": {unit: minute, price: "0.0100"}
  "streaming::nova-*": {unit: minute, price: "0.0200"}
  "sync::*": {unit: minute, tier_mode: graduated, tiers: [{up_to: 1000, price: "0.0080"}, {price: "0.0060"}]}
  "async::*": {unit: hour, tier_mode: volume, tiers: [{up_to: 100, price: "0.50"}, {price: "0.40"}]}
  "sync::aura-2": {unit: 1k_characters, price: "0.0450"}
included:
  "streaming::nova-*": 100
  "sync::nova-*": 500
""")


def test_pass_through_charges_the_provider_cost_rounded_once_per_line():
    rated = rate_usage(PASS, JAN, [("streaming::nova-3", "minute", D("100"), D("0.4805")),
                                   ("sync::aura-2", "character", D("1234"), D("0.037"))])
    assert [(ln.line_item, ln.amount, ln.unit_price, ln.quantity, ln.unit) for ln in rated.lines] == [
        ("streaming::nova-3", D("0.48"), None, D("100"), "minute"),
        ("sync::aura-2", D("0.04"), None, D("1234"), "character"),
    ]
    assert rated.subtotal == D("0.52") and rated.total == D("0.52") and rated.tax == 0
    assert rated.provider_cost_usd == D("0.5175")


def test_cost_plus_marks_up_and_converts_with_the_periods_exchange_rate():
    rated = rate_usage(COST_PLUS_EUR, JAN, [("sync::nova-3", "minute", D("1000"), D("4.30"))])
    (line,) = rated.lines
    assert line.amount == D("4.95")  # 4.30 x 1.25 x 0.92 = 4.945 -> 4.95 (half-up, once)
    assert line.provider_cost_usd == D("4.30")
    assert rated.currency == "EUR" and rated.exchange_rate == D("0.92")


def test_a_missing_exchange_rate_is_an_error_not_a_guess():
    with pytest.raises(Invalid, match=r"bills in EUR but has no exchange rate for 2026-02"):
        rate_usage(COST_PLUS_EUR, Period.month("2026-02"), [])


def test_rate_card_line_item_without_a_rate_is_an_error_naming_it():
    with pytest.raises(Invalid, match=r"line item 'streaming::flux' has no rate in plan 'card'"):
        rate_usage(CARD, JAN, [("streaming::flux", "minute", D(1), D("0.01"))])


def test_rate_card_unit_that_cannot_convert_is_an_error():
    with pytest.raises(Invalid, match=r"line item 'sync::aura-1' is measured in characters"):
        rate_usage(CARD, JAN, [("sync::aura-1", "character", D(1000), D("0.01"))])


def test_included_is_used_first_then_graduated_tiers_shared_in_line_item_order():
    rated = rate_usage(CARD, JAN, [
        ("sync::nova-3", "minute", D(700), D("3.01")),
        ("sync::nova-2", "minute", D(600), D("2.58")),
    ])
    rows = [(ln.kind, ln.line_item, ln.quantity, ln.unit_price, ln.amount) for ln in rated.lines]
    # nova-2 sorts first: it uses the allowance; nova-3 continues at position 101 of the shared tiers
    assert rows == [
        ("included", "sync::nova-2", D(500), D(0), D("0.00")),
        ("usage", "sync::nova-2", D(100), D("0.0080"), D("0.80")),
        ("usage", "sync::nova-3", D(700), D("0.0080"), D("5.60")),
    ]
    more = rate_usage(CARD, JAN, [("sync::nova-3", "minute", D(1700), D("7"))])
    assert [(ln.quantity, ln.unit_price) for ln in more.lines] == [
        (D(500), D(0)), (D(1000), D("0.0080")), (D(200), D("0.0060")),
    ]
    assert [ln.description for ln in more.lines][1:] == [
        "sync::nova-3, graduated tier 1 (per min)", "sync::nova-3, graduated tier 2 (per min)",
    ]


def test_provider_cost_is_carried_once_per_line_item():
    rated = rate_usage(CARD, JAN, [("sync::nova-3", "minute", D(1700), D("7.31"))])
    assert [ln.provider_cost_usd for ln in rated.lines] == [D("7.31"), D(0), D(0)]
    assert rated.provider_cost_usd == D("7.31")


def test_volume_tier_reached_by_all_line_items_of_the_rate_prices_each():
    rated = rate_usage(CARD, JAN, [
        ("async::nova-3", "minute", D(3000), D(1)),  # 50 h
        ("async::nova-2", "minute", D(3600), D(1)),  # 60 h -> together 110 h: tier 2
    ])
    assert [(ln.line_item, ln.unit, ln.quantity, ln.unit_price, ln.amount) for ln in rated.lines] == [
        ("async::nova-2", "hour", D(60), D("0.40"), D("24.00")),
        ("async::nova-3", "hour", D(50), D("0.40"), D("20.00")),
    ]


def test_most_specific_rate_and_its_allowance():
    rated = rate_usage(CARD, JAN, [("streaming::nova-2", "minute", D(150), D(1)),
                                   ("streaming::nova-3", "minute", D(10), D(1))])
    assert [(ln.line_item, ln.kind, ln.quantity, ln.unit_price, ln.rate) for ln in rated.lines] == [
        ("streaming::nova-2", "included", D(100), D(0), "streaming::nova-*"),
        ("streaming::nova-2", "usage", D(50), D("0.0200"), "streaming::nova-*"),
        ("streaming::nova-3", "usage", D(10), D("0.0100"), "streaming::nova-3"),  # allowance used up
    ]


def test_zero_usage_still_shows_the_line_item_and_its_cost():
    rated = rate_usage(CARD, JAN, [("sync::aura-2", "character", D(0), D("0.0001"))])
    (line,) = rated.lines
    assert (line.quantity, line.unit_price, line.amount, line.provider_cost_usd) == (
        D(0), D("0.0450"), D("0.00"), D("0.0001"))


MIN_TAX = plan("""
id: min
currency: USD
mode: rate_card
base_fee: "49.00"
minimum: "20.00"
tax_percent: "8.25"
rates: {"*": {unit: minute, price: "0.01"}}
""")


def test_base_fee_minimum_top_up_and_tax_on_the_subtotal():
    rated = rate_usage(MIN_TAX, JAN, [("sync::nova-3", "minute", D("1234.5"), D(5))])
    assert [(ln.kind, ln.amount) for ln in rated.lines] == [
        ("usage", D("12.35")), ("base_fee", D("49.00")), ("minimum", D("7.65")),
    ]
    assert rated.subtotal == D("69.00")
    assert rated.tax == D("5.69")  # 69.00 x 8.25 % = 5.6925
    assert rated.total == D("74.69")
    above = rate_usage(MIN_TAX, JAN, [("sync::nova-3", "minute", D(2500), D(5))])
    assert [ln.kind for ln in above.lines] == ["usage", "base_fee"]  # 25.00 >= 20.00: no top-up
    empty = rate_usage(MIN_TAX, JAN, [])
    assert [(ln.kind, ln.amount) for ln in empty.lines] == [("base_fee", D("49.00")), ("minimum", D("20.00"))]


def test_byo_usage_is_shown_at_zero_unless_the_plan_prices_it():
    usage = [UsageLine("sync::nova-3", "minute", D(100), D("0.43"), byo=True),
             UsageLine("sync::nova-3", "minute", D(100), D("0.43"))]
    rated = rate_usage(MIN_TAX, JAN, usage)
    assert [(ln.kind, ln.quantity, ln.amount, ln.provider_cost_usd) for ln in rated.lines][:2] == [
        ("usage", D(100), D("1.00"), D("0.43")), ("byo", D(100), D("0.00"), D("0.43")),
    ]
    # BYO line items need no rate when they are not billed
    assert rate_usage(CARD, JAN, [("streaming::flux", "minute", D(5), D(1), True)]).total == 0
    priced = plan_from_dict({**MIN_TAX.to_dict(), "byo_pricing": "plan"})
    rated = rate_usage(priced, JAN, usage)
    assert [(ln.kind, ln.quantity, ln.amount) for ln in rated.lines][:1] == [("usage", D(200), D("2.00"))]


def test_currency_minor_units_jpy():
    jpy = plan('id: jp\ncurrency: JPY\nmode: pass_through\nexchange_rates: {"2026-01": "150.5"}\n'
               'base_fee: 1000\ntax_percent: 10\n')
    rated = rate_usage(jpy, JAN, [("sync::nova-3", "minute", D(10), D("0.043"))])
    assert [ln.amount for ln in rated.lines] == [D("6"), D("1000")]  # 0.043 x 150.5 = 6.4715 -> 6
    assert (rated.subtotal, rated.tax, rated.total) == (D("1006"), D("101"), D("1107"))


def test_usage_lines_are_summed_and_validated():
    rated = rate_usage(PASS, JAN, [("a::b", "minute", D(1), D("0.004")),
                                   ("a::b", "minute", D(2), D("0.002"))])
    assert [(ln.quantity, ln.amount) for ln in rated.lines] == [(D(3), D("0.01"))]
    with pytest.raises(Invalid, match="has usage in minute and in character"):
        rate_usage(PASS, JAN, [("a::b", "minute", D(1), D(0)), ("a::b", "character", D(1), D(0))])
    with pytest.raises(Invalid, match="not 0.5"):
        rate_usage(PASS, JAN, [("a::b", "minute", 0.5, D(0))])
    with pytest.raises(Invalid, match="must not be negative"):
        rate_usage(PASS, JAN, [("a::b", "minute", D(-1), D(0))])


# --------------------------------------------------------------------------- properties

quantities = st.decimals(min_value=0, max_value=10**7, places=4, allow_nan=False, allow_infinity=False)
costs = st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=10, places=10, allow_nan=False, allow_infinity=False)
line_items = st.sampled_from(["sync::nova-3", "sync::nova-2", "streaming::nova-3", "async::nova-3", "x::y"])
usage_lines = st.lists(
    st.builds(UsageLine, line_items, st.just("minute"), quantities, costs, st.booleans()), max_size=8
)


@st.composite
def tiers(draw):
    bounds = sorted(set(draw(st.lists(st.integers(1, 10**6), min_size=0, max_size=4))))
    ps = draw(st.lists(prices, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return [{"up_to": str(b), "price": fmt(p)} for b, p in zip(bounds, ps, strict=False)] + [
        {"up_to": None, "price": fmt(ps[-1])}]


@st.composite
def plans(draw):
    mode = draw(st.sampled_from(["pass_through", "cost_plus", "rate_card"]))
    currency = draw(st.sampled_from(["USD", "EUR", "JPY", "KWD"]))
    places = {"JPY": 0, "KWD": 3}.get(currency, 2)
    money = st.decimals(min_value=0, max_value=1000, places=places, allow_nan=False, allow_infinity=False)
    data = {
        "id": "p", "currency": currency, "mode": mode, "effective_from": "2026-01-01",
        "base_fee": fmt(draw(money)), "minimum": fmt(draw(money)),
        "tax_percent": fmt(draw(st.decimals(min_value=0, max_value=30, places=3))),
        "byo_pricing": draw(st.sampled_from(["zero", "plan"])),
        "exchange_rates": {"2026-01": fmt(draw(st.decimals(min_value="0.0001", max_value=200, places=4)))},
    }
    if mode == "cost_plus":
        data["markup_percent"] = fmt(draw(st.decimals(min_value=0, max_value=300, places=2)))
    if mode == "rate_card":
        data["rates"] = {
            "*": {"unit": "minute", "price": fmt(draw(prices))},
            "sync::*": {"unit": draw(st.sampled_from(["minute", "hour", "second"])), "tiers": draw(tiers()),
                        "tier_mode": draw(st.sampled_from(["graduated", "volume"]))},
        }
        data["included"] = {"sync::*": fmt(draw(quantities))}
    return plan_from_dict(data)


def fmt(d: D) -> str:
    return format(d, "f")


def assert_no_float(obj):
    if isinstance(obj, float):
        raise AssertionError(f"float found: {obj!r}")
    if isinstance(obj, tuple | list):
        for item in obj:
            assert_no_float(item)
    elif hasattr(obj, "__dataclass_fields__"):
        for f in fields(obj):
            assert_no_float(getattr(obj, f.name))


@settings(max_examples=300, deadline=None)
@given(plans(), usage_lines)
def test_totals_are_sums_of_rounded_lines_and_rating_is_deterministic(p, usage):
    rated = rate_usage(p, JAN, usage)
    amounts = [ln.amount for ln in rated.lines]
    assert all(isinstance(a, D) and a == round_money(a, p.currency) for a in amounts)
    assert rated.subtotal == sum(amounts, D(0))
    assert rated.tax == round_money(rated.subtotal * p.tax_percent / 100, p.currency)
    assert rated.total == rated.subtotal + rated.tax
    usage_amount = sum((ln.amount for ln in rated.lines if ln.line_item), D(0))
    assert usage_amount + p.base_fee + max(D(0), p.minimum - usage_amount) == rated.subtotal
    assert rated.provider_cost_usd == sum((u.provider_cost_usd for u in usage), D(0))
    assert rate_usage(p, JAN, list(reversed(usage))) == rated  # order of input does not matter
    assert rate_usage(p, JAN, usage) == rated  # deterministic
    assert_no_float(rated)


@settings(max_examples=200, deadline=None)
@given(tiers(), st.sampled_from(["graduated", "volume"]), quantities, quantities)
def test_graduated_is_monotonic_and_volume_is_reached_price_times_quantity(ts, mode, q1, q2):
    p = plan_from_dict({"id": "t", "currency": "USD", "mode": "rate_card", "effective_from": "2026-01-01",
                        "rates": {"sync::*": {"unit": "minute", "tiers": ts, "tier_mode": mode}}})
    lo, hi = sorted([q1, q2])

    def rated(q):
        return rate_usage(p, JAN, [("sync::nova-3", "minute", q, D(0))])

    if mode == "graduated":
        exact = [sum((ln.quantity * ln.unit_price for ln in rated(q).lines), D(0)) for q in (lo, hi)]
        assert exact[0] <= exact[1]
        assert rated(lo).total <= rated(hi).total
    else:
        reached = next(t for t in p.rates[0].tiers if t.up_to is None or hi <= t.up_to)
        (line,) = rated(hi).lines
        assert line.unit_price == reached.price
        assert line.amount == round_money(reached.price * hi, "USD")


@settings(max_examples=100, deadline=None)
@given(plans(), usage_lines, st.data())
def test_splitting_usage_into_more_rows_changes_nothing(p, usage, data):
    split = []
    for u in usage:
        q_part = data.draw(st.decimals(min_value=0, max_value=u.quantity, places=4))
        c_part = data.draw(st.decimals(min_value=0, max_value=u.provider_cost_usd, places=6))
        split.append(UsageLine(u.line_item, u.unit, q_part, c_part, u.byo))
        split.append(UsageLine(u.line_item, u.unit, u.quantity - q_part, u.provider_cost_usd - c_part, u.byo))
    assert rate_usage(p, JAN, split) == rate_usage(p, JAN, usage)
