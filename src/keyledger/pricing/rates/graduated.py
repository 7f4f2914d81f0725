"""Graduated tiers: each unit is priced by the tier its position falls in.

Tier ``i`` covers positions ``(up_to[i-1], up_to[i]]`` (the first starts at 0; ``up_to=None`` is
unbounded). ``start`` lets several line items share one rate's tiers: the second line item continues
where the first stopped, so the total over all of them equals the price of their summed quantity.
"""

from __future__ import annotations

from decimal import Decimal

from keyledger.pricing.model import Tier
from keyledger.pricing.rates import EXACT, Segment


def segments(quantity: Decimal, tiers: tuple[Tier, ...], start: Decimal = Decimal(0)) -> list[Segment]:
    """Positions ``(start, start + quantity]`` split by tier, in tier order, zero-quantity parts omitted."""
    out: list[Segment] = []
    position = start
    end = EXACT.add(start, quantity)
    lower = Decimal(0)
    for number, tier in enumerate(tiers, start=1):
        upper = tier.up_to
        if upper is None or upper > position:
            take_to = end if upper is None else min(end, upper)
            take_from = max(position, lower)
            if take_to > take_from:
                out.append(Segment(EXACT.subtract(take_to, take_from), tier.price, number))
                position = take_to
        if upper is None or position >= end:
            break
        lower = upper
    return out


def price_at(position: Decimal, tiers: tuple[Tier, ...]) -> tuple[int, Decimal]:
    """(tier number, unit price) of the next unit after ``position``."""
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or position < tier.up_to:
            return number, tier.price
    raise ValueError("tiers must end with an unbounded tier (up_to: null)")
