"""Pass-through: the customer pays the provider's cost, converted to the plan's currency."""

from __future__ import annotations

from decimal import Decimal

from keyledger.pricing.rates import EXACT


def charge(cost_usd: Decimal, exchange_rate: Decimal) -> Decimal:
    """Exact ``cost_usd x exchange_rate`` (USD -> plan currency)."""
    return EXACT.multiply(cost_usd, exchange_rate)
