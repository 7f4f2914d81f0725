"""The ordered pure steps that make an invoice's lines and totals. No I/O, no rounding of its own.

1. ``period_lines``: the period's rated lines (``pricing.rate_usage``), as invoice lines.
2. ``late_lines``: for an earlier, finalized period Q with usage that arrived after it was invoiced,
   the *difference* between rating Q's usage with and without the late records, under the plan version
   Q's invoice recorded (so tiers, allowances and the minimum of Q are honoured, not restarted):
   one line per line item (and a minimum adjustment when Q's minimum top-up shrinks), each marked
   ``late_adjustment`` with ``late_period = Q``. Differences of rounded amounts need no rounding.
3. ``totals``: subtotal = sum of lines; tax = ``round_money(subtotal x tax% / 100)`` (the invoice's
   one rounding of tax); total = subtotal + tax.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from keyledger.core.money import round_money
from keyledger.invoices.model import money_str, num_str
from keyledger.pricing.model import Period, Plan, PricedLine, UsageLine
from keyledger.pricing.rate import rate_usage
from keyledger.pricing.rates import EXACT

ZERO = Decimal(0)
USAGE_KINDS = ("usage", "included", "byo")


@dataclass(frozen=True)
class Line:
    """One invoice line (PRODUCT §11 fields plus kind, rate and the late-adjustment marking)."""

    kind: str
    description: str
    line_item: str | None
    unit: str | None
    quantity: Decimal | None
    unit_price: Decimal | None
    amount: Decimal
    provider_cost_usd: Decimal
    rate: str | None = None
    late_adjustment: bool = False
    late_period: str | None = None

    def to_dict(self, currency: str) -> dict[str, Any]:
        return {
            "description": self.description,
            "line_item": self.line_item,
            "unit": self.unit,
            "quantity": num_str(self.quantity),
            "unit_price": num_str(self.unit_price),
            "amount": money_str(self.amount, currency),
            "provider_cost_usd": num_str(self.provider_cost_usd),
            "kind": self.kind,
            "rate": self.rate,
            "late_adjustment": self.late_adjustment,
            "late_period": self.late_period,
        }


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    provider_cost_usd: Decimal


def from_priced(p: PricedLine) -> Line:
    return Line(
        kind=p.kind,
        description=p.description,
        line_item=p.line_item,
        unit=p.unit,
        quantity=p.quantity,
        unit_price=p.unit_price,
        amount=p.amount,
        provider_cost_usd=p.provider_cost_usd,
        rate=p.rate,
    )


def period_lines(plan: Plan, period: Period, usage: Iterable[UsageLine]) -> list[Line]:
    """Step 1: the period's usage rated under ``plan``, as invoice lines (pricing's order)."""
    return [from_priced(p) for p in rate_usage(plan, period, usage).lines]


def _by_item(lines: Iterable[PricedLine]) -> dict[tuple[str, bool], list[PricedLine]]:
    out: dict[tuple[str, bool], list[PricedLine]] = {}
    for line in lines:
        if line.kind in USAGE_KINDS and line.line_item is not None:
            out.setdefault((line.line_item, line.kind == "byo"), []).append(line)
    return out


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for v in values:
        total = EXACT.add(total, v)
    return total


def _one_price(lines: list[PricedLine]) -> Decimal | None:
    prices = {line.unit_price for line in lines if line.kind != "included"}
    if len(prices) == 1 and None not in prices:
        return next(iter(prices))
    return None


def late_lines(plan: Plan, period: Period, billed: list[UsageLine], late: list[UsageLine]) -> list[Line]:
    """Step 2: what ``late`` usage of ``period`` adds to what ``billed`` usage was charged (see module)."""
    if not late:
        return []
    before = rate_usage(plan, period, billed)
    after = rate_usage(plan, period, [*billed, *late])
    old, new = _by_item(before.lines), _by_item(after.lines)
    out: list[Line] = []
    for key in sorted(set(old) | set(new)):
        item, byo = key
        o, n = old.get(key, []), new.get(key, [])
        amount = EXACT.subtract(_sum(x.amount for x in n), _sum(x.amount for x in o))
        qty = EXACT.subtract(_sum(x.quantity or ZERO for x in n), _sum(x.quantity or ZERO for x in o))
        cost = EXACT.subtract(_sum(x.provider_cost_usd for x in n), _sum(x.provider_cost_usd for x in o))
        if amount == 0 and qty == 0 and cost == 0:
            continue
        unit = (n or o)[0].unit
        price = _one_price(n) if _one_price(n) == _one_price(o) or not o else None
        what = "on the customer's own Deepgram account, not billed" if byo else None
        out.append(
            Line(
                kind="byo" if byo else "usage",
                description=f"Late usage from {period.key}: {item}" + (f" ({what})" if what else ""),
                line_item=item,
                unit=unit,
                quantity=qty,
                unit_price=price,
                amount=amount,
                provider_cost_usd=cost,
                rate=(n or o)[0].rate,
                late_adjustment=True,
                late_period=period.key,
            )
        )
    minimum = EXACT.subtract(
        _sum(x.amount for x in after.lines if x.kind == "minimum"),
        _sum(x.amount for x in before.lines if x.kind == "minimum"),
    )
    if minimum:
        out.append(
            Line(
                kind="minimum",
                description=f"Late usage from {period.key}: minimum charge already billed",
                line_item=None,
                unit=None,
                quantity=Decimal(1),
                unit_price=minimum,
                amount=minimum,
                provider_cost_usd=ZERO,
                late_adjustment=True,
                late_period=period.key,
            )
        )
    return out


def totals(lines: Iterable[Line], tax_percent: Decimal, currency: str) -> Totals:
    """Step 3: sums of the (already rounded) lines; tax rounded once."""
    lines = list(lines)
    subtotal = _sum(line.amount for line in lines)
    tax = round_money(EXACT.divide(EXACT.multiply(subtotal, tax_percent), Decimal(100)), currency)
    return Totals(subtotal, tax, EXACT.add(subtotal, tax), _sum(line.provider_cost_usd for line in lines))
