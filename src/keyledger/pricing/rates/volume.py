"""Volume tiers: the tier reached by the period's whole quantity prices every unit.

The reached tier is the first whose ``up_to`` is at least the quantity (bounds are inclusive; a zero
quantity reaches the first tier). Several line items under one rate share the reached tier: ``reached``
is their summed quantity.
"""

from __future__ import annotations

from decimal import Decimal

from keyledger.pricing.model import Tier
from keyledger.pricing.rates import Segment


def reached_tier(reached: Decimal, tiers: tuple[Tier, ...]) -> tuple[int, Decimal]:
    """(tier number, unit price) of the tier that ``reached`` falls in."""
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or reached <= tier.up_to:
            return number, tier.price
    raise ValueError("tiers must end with an unbounded tier (up_to: null)")  # plans.py guarantees it


def segments(quantity: Decimal, tiers: tuple[Tier, ...], reached: Decimal | None = None) -> list[Segment]:
    """``quantity`` at the price of the tier reached by ``reached`` (default: ``quantity`` itself)."""
    number, price = reached_tier(quantity if reached is None else reached, tiers)
    return [Segment(quantity, price, number)] if quantity else []
