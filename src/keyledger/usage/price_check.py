"""The price check (pure): each ledger record priced with keyledger's own copy of Deepgram's price list
(``keyledger.provider.deepgram.prices``) and compared with the ``usd`` Deepgram reported for it.

Rule. A record's expected cost is ``price × quantity`` in the price's unit (exact, unrounded), with the
price in effect for its line item and tier on the record's UTC day. It *disagrees* when
``|usd − expected| > max(absolute_usd, relative × expected)``. The defaults (``absolute_usd`` = 0.000001,
a ten-thousandth of a cent; ``relative`` = 0.01, 1 %) absorb Deepgram rounding its per-request ``usd``
(to 6 or more places, or a float's last digits) and the ledger keeping minutes to 10 places, while any
change of a list price (0.0043 → 0.0048 is 11 %) is flagged on every record. A record whose line item
has no price in effect (or a price in another unit) is not checked: it is counted under its line item
in ``unknown_line_items``, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from keyledger.core.errors import Invalid
from keyledger.core.money import to_decimal
from keyledger.provider.deepgram.prices import DEFAULT_TIER, ListPrice, PriceList

_ZERO = Decimal(0)
DEFAULT_ABSOLUTE_USD = Decimal("0.000001")
DEFAULT_RELATIVE = Decimal("0.01")
EXAMPLES = 10  # disagreeing records listed by request id


@dataclass(frozen=True)
class Tolerance:
    absolute_usd: Decimal = DEFAULT_ABSOLUTE_USD
    relative: Decimal = DEFAULT_RELATIVE

    @classmethod
    def parse(cls, absolute_usd: str | Decimal, relative: str | Decimal) -> Tolerance:
        a = to_decimal(absolute_usd, "price check absolute tolerance (USD)")
        r = to_decimal(relative, "price check relative tolerance")
        if a < 0 or r < 0:
            raise Invalid("price check tolerances must not be negative")
        return cls(a, r)

    def disagrees(self, provider_usd: Decimal, expected_usd: Decimal) -> bool:
        return abs(provider_usd - expected_usd) > max(self.absolute_usd, self.relative * abs(expected_usd))


@dataclass(frozen=True)
class PriceCheckConfig:
    prices: PriceList
    tier: str = DEFAULT_TIER
    tolerance: Tolerance = field(default_factory=Tolerance)

    def __post_init__(self) -> None:
        if self.tier not in self.prices.tiers:
            raise Invalid(
                f"provider price tier {self.tier!r} is not in the price list {self.prices.origin} "
                f"(tiers: {', '.join(self.prices.tiers)})"
            )


class LedgerRecord(NamedTuple):
    """What the check needs of one ledger row (``usage_records``)."""

    request_id: str
    line_item: str
    unit: str  # the ledger unit: minute | character | token
    quantity: Decimal
    cost_usd: Decimal  # Deepgram's usd
    day: date  # the UTC day of ``created`` (prices change at a UTC day)


@dataclass(frozen=True)
class RecordCheck:
    price: ListPrice | None  # None: no price in effect, or one in another unit (not checked)
    expected_usd: Decimal | None
    disagrees: bool


def check_record(record: LedgerRecord, config: PriceCheckConfig) -> RecordCheck:
    price = config.prices.price_at(record.line_item, config.tier, record.day)
    if price is None or price.ledger_unit != record.unit:
        return RecordCheck(None, None, False)
    expected = price.cost(record.quantity)
    return RecordCheck(price, expected, config.tolerance.disagrees(record.cost_usd, expected))


@dataclass
class _Line:
    unit: str
    records: int = 0
    provider_usd: Decimal = _ZERO
    expected_usd: Decimal = _ZERO
    disagreeing: int = 0
    prices: dict[tuple[Decimal, str, object], None] = field(default_factory=dict)


def _resolve(
    r: LedgerRecord,
    config: PriceCheckConfig,
    checked: dict[str, _Line],
    unknown: dict[tuple[str, str], _Line],
) -> tuple[_Line, ListPrice | None]:
    """The cell a record's (line item, unit, day) adds to, and the price in effect (None: unknown)."""
    price = check_record(r, config).price
    if price is None:
        cell = unknown.get((r.line_item, r.unit))
        if cell is None:
            cell = unknown[(r.line_item, r.unit)] = _Line(r.unit)
        return cell, None
    line = checked.get(r.line_item)
    if line is None:
        line = checked[r.line_item] = _Line(r.unit)
    line.prices[(price.price, price.unit, price.effective_from)] = None
    return line, price


def summarize(records: Iterable[LedgerRecord], config: PriceCheckConfig) -> dict:
    """Per line item: records, Deepgram's usd, the list's expected usd, the difference (Deepgram −
    expected) and the disagreeing records; unknown line items apart; the first disagreeing records."""
    checked: dict[str, _Line] = {}
    unknown: dict[tuple[str, str], _Line] = {}
    examples: list[dict] = []
    # (line item, unit, day) → the line's cell and the price in effect (None: unknown); few distinct keys
    resolved: dict[tuple[str, str, date], tuple[_Line, ListPrice | None]] = {}
    absolute, relative = config.tolerance.absolute_usd, config.tolerance.relative
    for r in records:
        key = (r.line_item, r.unit, r.day)
        found = resolved.get(key)
        if found is None:
            found = resolved[key] = _resolve(r, config, checked, unknown)
        line, price = found
        line.records += 1
        line.provider_usd += r.cost_usd
        if price is None:
            continue
        expected = price.cost(r.quantity)
        line.expected_usd += expected
        # Tolerance.disagrees, inlined: this loop runs once per ledger record
        if abs(r.cost_usd - expected) > max(absolute, relative * abs(expected)):
            line.disagreeing += 1
            if len(examples) < EXAMPLES:
                examples.append(
                    {
                        "request_id": r.request_id,
                        "line_item": r.line_item,
                        "day": r.day,
                        "quantity": r.quantity,
                        "unit": r.unit,
                        "provider_usd": r.cost_usd,
                        "expected_usd": expected,
                        "difference_usd": r.cost_usd - expected,
                    }
                )
    lines = [
        {
            "line_item": name,
            "unit": c.unit,
            "records": c.records,
            "provider_usd": c.provider_usd,
            "expected_usd": c.expected_usd,
            "difference_usd": c.provider_usd - c.expected_usd,
            "disagreeing_records": c.disagreeing,
            "list_prices": [
                {"price": price, "unit": unit, "effective_from": eff} for price, unit, eff in c.prices
            ],
        }
        for name, c in sorted(checked.items())
    ]
    unknown_lines = [
        {"line_item": name, "unit": unit, "records": c.records, "provider_usd": c.provider_usd}
        for (name, unit), c in sorted(unknown.items())
    ]
    provider = sum((c.provider_usd for c in checked.values()), _ZERO)
    expected = sum((c.expected_usd for c in checked.values()), _ZERO)
    disagreeing = sum(c.disagreeing for c in checked.values())
    return {
        "price_list": config.prices.origin,
        "tier": config.tier,
        "tolerance": {"absolute_usd": config.tolerance.absolute_usd, "relative": config.tolerance.relative},
        "checked_records": sum(c.records for c in checked.values()),
        "provider_usd": provider,
        "expected_usd": expected,
        "difference_usd": provider - expected,
        "disagreeing_records": disagreeing,
        "agrees": disagreeing == 0,
        "lines": lines,
        "unknown_line_items": unknown_lines,
        "disagreeing_examples": examples,
    }


def brief(report: dict) -> dict:
    """The short form ``keyledger reconcile`` carries."""
    return {
        "tier": report["tier"],
        "checked_records": report["checked_records"],
        "disagreeing_records": report["disagreeing_records"],
        "provider_usd": report["provider_usd"],
        "expected_usd": report["expected_usd"],
        "difference_usd": report["difference_usd"],
        "agrees": report["agrees"],
        "unknown_line_items": [u["line_item"] for u in report["unknown_line_items"]],
    }
