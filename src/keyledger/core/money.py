"""Money: exact decimals and the ONE rounding function.

Every amount is a ``Decimal`` from the moment it is parsed. Unit prices keep up to 10 decimal places;
an amount that is billed is rounded exactly once, by :func:`round_money`, half-up to the currency's
minor unit. Nothing else in keyledger rounds money.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from keyledger.core.errors import Invalid

# ISO 4217 minor units for currencies that differ from the default of 2.
_MINOR_UNITS: dict[str, int] = {
    "BHD": 3, "CLP": 0, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "OMR": 3,
    "PYG": 0, "TND": 3, "UGX": 0, "VND": 0, "XAF": 0, "XOF": 0,
}
UNIT_PRICE_PLACES = 10


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _MINOR_UNITS.get(currency.upper(), 2)


_QUANTA: dict[str, Decimal] = {}  # currency -> its minor unit as a Decimal (0.01), computed once


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round an amount to the currency's minor unit, half-up. The only rounding of money in keyledger."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, got {type(amount).__name__}")
    quantum = _QUANTA.get(currency)
    if quantum is None:
        quantum = _QUANTA[currency] = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


def to_decimal(value: Any, field: str = "amount") -> Decimal:
    """Parse a user- or provider-supplied number into a Decimal; floats are refused (already inexact)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool) or isinstance(value, float):
        raise Invalid(f"{field}: give an exact decimal (a string such as \"12.34\"), not {value!r}")
    elif isinstance(value, str) and (not value.isascii() or "_" in value):
        # Decimal() would read "１０" (fullwidth digits) and "1_000" as numbers; a user meant neither
        raise Invalid(f"{field}: {value!r} is not a decimal number")
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise Invalid(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise Invalid(f"{field}: {value!r} is not a decimal number")
    if not result.is_finite():
        raise Invalid(f"{field}: {value!r} is not a finite number")
    return result


def loads_exact(text: str | bytes) -> Any:
    """json.loads with every JSON number that has a fraction parsed as Decimal (never float)."""
    return json.loads(text, parse_float=Decimal)


def format_amount(amount: Decimal) -> str:
    """Render a Decimal for JSON contracts: a string holding the exact decimal, no exponent."""
    return format(amount, "f")
