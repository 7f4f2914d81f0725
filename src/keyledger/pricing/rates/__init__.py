"""Price models, one pure module each: ``flat``, ``graduated``, ``volume``, ``pass_through``, ``cost_plus``.

Each takes exact decimals and returns exact decimals: nothing here rounds. Arithmetic goes through
:data:`EXACT`, a context that traps on any inexact result, so a silent loss of digits is impossible
(the caller rounds each billed amount once, with ``core.money.round_money``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True)
class Segment:
    """A quantity at one unit price; its exact amount is ``quantity x unit_price``."""

    quantity: Decimal
    unit_price: Decimal
    tier: int | None = None  # 1-based tier number for tiered models

    @property
    def amount(self) -> Decimal:
        return EXACT.multiply(self.quantity, self.unit_price)


def total(segments: list[Segment]) -> Decimal:
    """The exact (unrounded) amount of some segments."""
    out = Decimal(0)
    for s in segments:
        out = EXACT.add(out, s.amount)
    return out
