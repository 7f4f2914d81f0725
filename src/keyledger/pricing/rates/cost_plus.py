"""Cost plus: the provider's cost marked up by a percentage, converted to the plan's currency."""

from __future__ import annotations

from decimal import Decimal

from keyledger.pricing.rates import EXACT


def factor(markup_percent: Decimal) -> Decimal:
    """``1 + markup_percent / 100``, exact."""
    return EXACT.add(Decimal(1), EXACT.divide(markup_percent, Decimal(100)))


def charge(cost_usd: Decimal, markup_percent: Decimal, exchange_rate: Decimal) -> Decimal:
    """Exact ``cost_usd x (1 + markup_percent/100) x exchange_rate``."""
    return charge_by_factor(cost_usd, factor(markup_percent), exchange_rate)


def charge_by_factor(cost_usd: Decimal, markup_factor: Decimal, exchange_rate: Decimal) -> Decimal:
    """:func:`charge` with ``markup_factor = factor(markup_percent)`` already computed (it is constant per
    plan version)."""
    return EXACT.multiply(EXACT.multiply(cost_usd, markup_factor), exchange_rate)
