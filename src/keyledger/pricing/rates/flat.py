"""Flat: one price per unit, whatever the quantity."""

from __future__ import annotations

from decimal import Decimal

from keyledger.pricing.rates import Segment


def segments(quantity: Decimal, price: Decimal) -> list[Segment]:
    """``quantity`` at ``price`` (one segment; none for a zero quantity)."""
    return [Segment(quantity, price)] if quantity else []
