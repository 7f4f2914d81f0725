"""Rating: a period's usage under one plan version -> priced lines, subtotal, tax, total. Pure.

Steps, in order (docs/pricing.md has the why):

1. Usage lines are summed per line item (a line item has one ledger unit); BYO usage is shown at zero
   unless the plan says ``byo_pricing: plan``.
2. ``pass_through`` / ``cost_plus``: each line item costs its provider cost (x markup) x the period's
   exchange rate. ``rate_card``: each line item takes its most specific rate; its quantity converts to the
   rate's unit; the matching ``included`` allowance is used first (line items in name order); the rest
   is priced by the rate: flat, graduated (line items of one rate share the tiers, in name order) or
   volume (the tier reached by everything the rate prices).
3. Each line's amount is rounded once (``round_money``); the usage amount is the sum of those.
4. A base fee line; a minimum top-up line when the usage amount is below the minimum.
5. subtotal = sum of lines; tax = round_money(subtotal x tax_percent / 100); total = subtotal + tax.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from keyledger.core.errors import Invalid
from keyledger.core.money import format_amount, round_money, to_decimal
from keyledger.pricing.model import (
    ByoPricing,
    Mode,
    Pattern,
    Period,
    Plan,
    PricedLine,
    Rate,
    RatedPeriod,
    TierMode,
    UsageLine,
)
from keyledger.pricing.rates import EXACT, Segment, cost_plus, flat, graduated, pass_through, volume
from keyledger.pricing.units import LABELS, to_rate_unit

UsageInput = UsageLine | tuple


def rate_usage(plan: Plan, period: Period, usage: Iterable[UsageInput]) -> RatedPeriod:
    """Price ``usage`` (UsageLine, or tuples ``(line_item, ledger_unit, quantity, provider_cost_usd[, byo])``)
    for ``period`` under ``plan``. Raises Invalid for a line item without a rate, a unit that cannot
    convert, a missing exchange rate or a malformed usage line."""
    fx = plan.exchange_rate(period)
    cur = plan.currency
    lines = aggregate(usage, merge_byo=plan.byo_pricing is ByoPricing.PLAN)
    billed = [u for u in lines if not u.byo]
    if plan.mode is Mode.RATE_CARD:
        priced = _rate_card(plan, billed)
    else:
        priced = _cost_based(plan, billed, fx)
    for u in lines:
        if u.byo:
            priced.append(PricedLine(
                kind="byo", description=f"{u.line_item}, on the customer's own Deepgram account (not billed)",
                line_item=u.line_item, unit=u.unit, quantity=u.quantity, unit_price=_ZERO,
                amount=_zero_amount(cur), provider_cost_usd=u.provider_cost_usd, rate="byo",
            ))
    priced.sort(key=_line_order)  # stable: segment order kept

    add = EXACT.add
    usage_amount = _ZERO
    for line in priced:
        usage_amount = add(usage_amount, line.amount)
    if plan.base_fee:
        priced.append(PricedLine(
            kind="base_fee", description=f"{plan.name} base fee, {period.key}", line_item=None, unit=None,
            quantity=_ONE, unit_price=plan.base_fee, amount=round_money(plan.base_fee, cur),
            provider_cost_usd=_ZERO,
        ))
    if usage_amount < plan.minimum:
        top_up = EXACT.subtract(plan.minimum, usage_amount)
        priced.append(PricedLine(
            kind="minimum",
            description=f"Minimum usage charge {format_amount(plan.minimum)} {cur}: top-up",
            line_item=None, unit=None, quantity=_ONE, unit_price=top_up,
            amount=round_money(top_up, cur), provider_cost_usd=_ZERO,
        ))
    subtotal = cost = _ZERO
    for line in priced:
        subtotal = add(subtotal, line.amount)
        cost = add(cost, line.provider_cost_usd)
    tax = round_money(EXACT.divide(EXACT.multiply(subtotal, plan.tax_percent), _HUNDRED), cur)
    return RatedPeriod(
        plan_id=plan.id, currency=cur, period=period, exchange_rate=fx, lines=tuple(priced),
        subtotal=subtotal, tax_percent=plan.tax_percent, tax=tax, total=add(subtotal, tax),
        provider_cost_usd=cost,
    )


_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_ZERO_AMOUNTS: dict[str, Decimal] = {}


def _zero_amount(currency: str) -> Decimal:
    """``round_money(Decimal(0), currency)``, computed once per currency (zero-priced lines)."""
    zero = _ZERO_AMOUNTS.get(currency)
    if zero is None:
        zero = _ZERO_AMOUNTS[currency] = round_money(Decimal(0), currency)
    return zero


def _line_order(line: PricedLine) -> tuple[str, bool]:
    return (line.line_item or "", line.kind == "byo")


def aggregate(usage: Iterable[UsageInput], *, merge_byo: bool = False) -> list[UsageLine]:
    """Usage summed per (line item, byo), in line-item order; validates every field (no floats)."""
    sums: dict[tuple[str, bool], UsageLine] = {}
    units: dict[str, str] = {}
    for raw in usage:
        u = _usage_line(raw)
        byo = u.byo and not merge_byo
        if units.setdefault(u.line_item, u.unit) != u.unit:
            raise Invalid(f"line item {u.line_item!r} has usage in {units[u.line_item]} and in {u.unit}")
        prev = sums.get((u.line_item, byo))
        if prev is None:
            if byo is u.byo:  # the line as it is (frozen), instead of an equal copy
                sums[(u.line_item, byo)] = u
            else:
                sums[(u.line_item, byo)] = UsageLine(
                    u.line_item, u.unit, u.quantity, u.provider_cost_usd, byo
                )
        else:
            sums[(u.line_item, byo)] = UsageLine(
                u.line_item, u.unit, EXACT.add(prev.quantity, u.quantity),
                EXACT.add(prev.provider_cost_usd, u.provider_cost_usd), byo,
            )
    return [sums[k] for k in sorted(sums)]


def _usage_line(raw: UsageInput) -> UsageLine:
    if type(raw) is UsageLine:  # the common case, already valid: checked here without copying it
        q, c, li, un = raw.quantity, raw.provider_cost_usd, raw.line_item, raw.unit
        if (
            type(q) is Decimal and type(c) is Decimal and type(li) is str and li and type(un) is str and un
            and q.is_finite() and c.is_finite() and q >= 0 and c >= 0
        ):
            return raw
    if isinstance(raw, UsageLine):
        line_item, unit, quantity, byo = raw.line_item, raw.unit, raw.quantity, raw.byo
        cost = raw.provider_cost_usd
    elif isinstance(raw, tuple) and len(raw) in (4, 5):
        line_item, unit, quantity, cost = raw[:4]
        byo = bool(raw[4]) if len(raw) == 5 else False
    else:
        raise Invalid(f"usage line {raw!r}: expected (line_item, unit, quantity, provider_cost_usd[, byo])")
    if not isinstance(line_item, str) or not line_item:
        raise Invalid(f"usage line {raw!r}: line_item must be a name")
    if not isinstance(unit, str) or not unit:
        raise Invalid(f"usage line {line_item!r}: unit must be a name")
    quantity = to_decimal(quantity, f"usage {line_item} quantity")
    cost = to_decimal(cost, f"usage {line_item} provider_cost_usd")
    if quantity < 0 or cost < 0:
        raise Invalid(f"usage line {line_item!r}: quantity and cost must not be negative")
    return UsageLine(line_item, unit, quantity, cost, byo)


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for v in values:
        total = EXACT.add(total, v)
    return total


# --------------------------------------------------------------------------- pass-through and cost-plus


def _cost_based(plan: Plan, billed: list[UsageLine], fx: Decimal) -> list[PricedLine]:
    out = []
    fx_note = "" if plan.currency == "USD" else f" (USD 1 = {plan.currency} {format_amount(fx)})"
    if plan.mode is Mode.COST_PLUS:
        markup = plan.memo("cost_plus")
        if "factor" not in markup:
            markup["factor"] = cost_plus.factor(plan.markup_percent)
        markup_factor = markup["factor"]
        how = f"at provider cost + {format_amount(plan.markup_percent)} %"
    else:
        how = "at provider cost"
    cur, rate = plan.currency, plan.mode.value
    for u in billed:
        if plan.mode is Mode.COST_PLUS:
            exact = cost_plus.charge_by_factor(u.provider_cost_usd, markup_factor, fx)
        else:
            exact = pass_through.charge(u.provider_cost_usd, fx)
        out.append(PricedLine(
            kind="usage", description=f"{u.line_item}, {how}{fx_note}", line_item=u.line_item, unit=u.unit,
            quantity=u.quantity, unit_price=None, amount=round_money(exact, cur),
            provider_cost_usd=u.provider_cost_usd, rate=rate,
        ))
    return out


# --------------------------------------------------------------------------- rate card


def _rate_card(plan: Plan, billed: list[UsageLine]) -> list[PricedLine]:
    cur = plan.currency
    zero = _zero_amount(cur)
    sub, add = EXACT.subtract, EXACT.add
    resolved: list[tuple[UsageLine, Rate, Decimal]] = []  # usage, its rate, its quantity in the rate's unit
    for u in billed:  # in line-item order (aggregate sorts)
        rate = plan.rate_for(u.line_item)
        if rate is None:
            raise Invalid(
                f"line item {u.line_item!r} has no rate in plan {plan.id!r} (rate_card): add a rate whose "
                "pattern matches it; usage is never priced as free by omission"
            )
        qty = to_rate_unit(u.quantity, u.unit, rate.unit, line_item=u.line_item, rate=rate.pattern.text)
        resolved.append((u, rate, qty))

    # Included allowances, used first, by line items in name order; one unit per allowance.
    free: list[Decimal] = [_ZERO] * len(resolved)
    allowance: list[Pattern | None] = [None] * len(resolved)
    remaining: dict[Pattern, Decimal] = {}
    allowance_unit: dict[Pattern, str] = {}
    for k, (u, rate, qty) in enumerate(resolved):
        inc = plan.included_for(u.line_item)
        if inc is None:
            continue
        if allowance_unit.setdefault(inc.pattern, rate.unit) != rate.unit:
            raise Invalid(
                f"included {inc.pattern.text!r} covers line items priced in {allowance_unit[inc.pattern]} "
                f"and in {rate.unit} ({u.line_item!r}); split it into patterns of one unit"
            )
        left = remaining.setdefault(inc.pattern, inc.quantity)
        free[k] = min(left, qty)
        allowance[k] = inc.pattern
        remaining[inc.pattern] = sub(left, free[k])
    billable = [sub(qty, free[k]) for k, (_, _, qty) in enumerate(resolved)]

    # Volume: the tier is reached by everything one rate prices.
    reached: dict[Pattern, Decimal] = {}
    for k, (_, rate, _) in enumerate(resolved):
        reached[rate.pattern] = add(reached.get(rate.pattern, _ZERO), billable[k])
    position: dict[Pattern, Decimal] = {}  # graduated: where the next line item starts in the tiers

    out: list[PricedLine] = []
    for k, (u, rate, _) in enumerate(resolved):
        label, pattern = LABELS[rate.unit], rate.pattern.text
        segments: list[Segment]
        if rate.price is not None:
            segments = flat.segments(billable[k], rate.price)
            idle = Segment(_ZERO, rate.price)
        elif rate.tier_mode is TierMode.GRADUATED:
            start = position.get(rate.pattern, _ZERO)
            segments = graduated.segments(billable[k], rate.tiers, start)
            position[rate.pattern] = add(start, billable[k])
            number, price = graduated.price_at(start, rate.tiers)
            idle = Segment(_ZERO, price, number)
        else:
            segments = volume.segments(billable[k], rate.tiers, reached[rate.pattern])
            number, price = volume.reached_tier(reached[rate.pattern], rate.tiers)
            idle = Segment(_ZERO, price, number)
        # A line item's provider cost is carried on its first line (sum by line_item for margins).
        cost = u.provider_cost_usd
        if free[k]:
            out.append(PricedLine(
                kind="included", description=f"{u.line_item}, included ({allowance[k].text} allowance)",
                line_item=u.line_item, unit=rate.unit, quantity=free[k], unit_price=_ZERO,
                amount=zero, provider_cost_usd=cost, rate=pattern,
            ))
            cost = _ZERO
        elif not segments:
            segments = [idle]
        for seg in segments:
            tier = ""
            if seg.tier is not None:
                kind = "graduated" if rate.tier_mode is TierMode.GRADUATED else "volume"
                tier = f", {kind} tier {seg.tier}"
            out.append(PricedLine(
                kind="usage", description=f"{u.line_item}{tier} (per {label})", line_item=u.line_item,
                unit=rate.unit, quantity=seg.quantity, unit_price=seg.unit_price,
                amount=round_money(seg.amount, cur), provider_cost_usd=cost, rate=pattern,
            ))
            cost = _ZERO
    return out
