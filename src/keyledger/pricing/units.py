"""Price units and their conversion from the ledger's units (minute, character, token). Pure.

A rate's unit says what one unit of its price buys (``1k_characters``: a thousand characters). A ledger
quantity converts to a rate unit by multiplying by a power of ten or 60, exact in decimal, except
minutes to hours (÷60), which may not terminate: that quotient is kept to 10 decimal places (the
ledger's own quantity precision), half-even. It is a quantity, not money; amounts are then exactly
``quantity x unit_price`` before their one rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, Inexact

from keyledger.core.errors import Invalid
from keyledger.pricing.rates import EXACT

QUANTITY_PLACES = 10
LEDGER_UNITS = ("minute", "character", "token")

# rate unit -> (ledger unit it converts from, multiplier numerator, divisor)
_CONVERSIONS: dict[str, tuple[str, int, int]] = {
    "second": ("minute", 60, 1),
    "minute": ("minute", 1, 1),
    "hour": ("minute", 1, 60),
    "agent_minute": ("minute", 1, 1),
    "agent_hour": ("minute", 1, 60),
    "character": ("character", 1, 1),
    "1k_characters": ("character", 1, 1000),
    "1m_characters": ("character", 1, 1_000_000),
    "token": ("token", 1, 1),
    "1k_tokens": ("token", 1, 1000),
    "1m_tokens": ("token", 1, 1_000_000),
}
PRICE_UNITS = tuple(_CONVERSIONS)

# How a unit reads on an invoice line.
LABELS: dict[str, str] = {
    "second": "s", "minute": "min", "hour": "h", "agent_minute": "agent min", "agent_hour": "agent h",
    "character": "chars", "1k_characters": "1k chars", "1m_characters": "1M chars",
    "token": "tokens", "1k_tokens": "1k tokens", "1m_tokens": "1M tokens",
}


def converts(ledger_unit: str, rate_unit: str) -> bool:
    conv = _CONVERSIONS.get(rate_unit)
    return conv is not None and conv[0] == ledger_unit


def to_rate_unit(
    quantity: Decimal, ledger_unit: str, rate_unit: str, *, line_item: str, rate: str
) -> Decimal:
    """``quantity`` (in ``ledger_unit``) expressed in ``rate_unit``; an impossible conversion is an error."""
    conv = _CONVERSIONS.get(rate_unit)
    if conv is None or conv[0] != ledger_unit:
        raise Invalid(
            f"line item {line_item!r} is measured in {ledger_unit}s, which rate {rate!r} "
            f"(unit {rate_unit}) cannot price; use a unit for {ledger_unit}s: "
            + ", ".join(u for u, c in _CONVERSIONS.items() if c[0] == ledger_unit)
        )
    _, mul, div = conv
    scaled = EXACT.multiply(quantity, Decimal(mul))
    try:
        return EXACT.divide(scaled, Decimal(div))
    except Inexact:
        quantum = Decimal(1).scaleb(-QUANTITY_PLACES)
        return _WIDE.divide(scaled, Decimal(div)).quantize(quantum, rounding=ROUND_HALF_EVEN, context=_WIDE)


_WIDE = EXACT.copy()
_WIDE.traps[Inexact] = False
