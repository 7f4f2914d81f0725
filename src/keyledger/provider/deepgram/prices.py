"""keyledger's own copy of Deepgram's price list: the file format, its loading and the price in effect.

The list ships as ``prices.toml`` beside this module; an operator with negotiated rates points
``KEYLEDGER_PROVIDER_PRICES`` at a file of the same format. Each ``[[price]]`` entry names a line item
(as the ledger names it: ``<method>::<family>``, see ``usage.py``), a tier (the Deepgram plan:
``pay-as-you-go``, ``growth``, ...), a unit, an exact decimal price (a string, never a TOML float) and an
optional ``effective_from`` date (UTC; absent: always). An entry applies from its date until the next
entry of the same line item and tier. Errors name the file and the entry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from keyledger.core.errors import Invalid

BUILT_IN = "built-in"
DEFAULT_TIER = "pay-as-you-go"

#: price unit → (the ledger unit it prices, ledger units per price unit)
PRICE_UNITS: dict[str, tuple[str, Decimal]] = {
    "minute": ("minute", Decimal(1)),
    "hour": ("minute", Decimal(60)),
    "character": ("character", Decimal(1)),
    "1k_characters": ("character", Decimal(1000)),
    "token": ("token", Decimal(1)),
    "1k_tokens": ("token", Decimal(1000)),
}


@dataclass(frozen=True, slots=True)
class ListPrice:
    line_item: str
    tier: str
    unit: str  # a key of PRICE_UNITS
    price: Decimal  # USD per unit
    effective_from: date | None
    source: str

    @property
    def ledger_unit(self) -> str:
        return PRICE_UNITS[self.unit][0]

    def cost(self, ledger_quantity: Decimal) -> Decimal:
        """Exact list cost of a quantity in ledger units (no rounding)."""
        per = PRICE_UNITS[self.unit][1]
        return self.price * ledger_quantity if per == 1 else self.price * ledger_quantity / per


@dataclass(frozen=True)
class PriceList:
    currency: str
    entries: tuple[ListPrice, ...]
    origin: str  # BUILT_IN or the file's path

    def __post_init__(self) -> None:
        by_key: dict[tuple[str, str], list[ListPrice]] = {}
        for e in self.entries:
            by_key.setdefault((e.line_item, e.tier), []).append(e)
        for entries in by_key.values():
            entries.sort(key=lambda e: e.effective_from or date.min)
        object.__setattr__(self, "_by_key", by_key)

    @property
    def tiers(self) -> list[str]:
        return sorted({e.tier for e in self.entries})

    def price_at(self, line_item: str, tier: str, when: datetime | date) -> ListPrice | None:
        """The entry in effect for the line item and tier at ``when`` (a UTC instant or day), else None."""
        day = when.astimezone(UTC).date() if isinstance(when, datetime) else when
        found = None
        for e in self._by_key.get((line_item, tier), ()):  # type: ignore[attr-defined]
            if e.effective_from is None or e.effective_from <= day:
                found = e
            else:
                break
        return found


def load_price_list(path: str | Path | None = None) -> PriceList:
    """The built-in list, or the operator's file at ``path``."""
    if path is None or not str(path).strip():
        text = resources.files(__package__).joinpath("prices.toml").read_text(encoding="utf-8")
        return parse_price_list(text, BUILT_IN)
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(f"provider price list {p}: cannot read it ({exc.strerror or exc})") from None
    return parse_price_list(text, str(p))


def parse_price_list(text: str, origin: str) -> PriceList:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Invalid(f"provider price list {origin}: not valid TOML ({exc})") from None
    currency = doc.get("currency", "USD")
    if currency != "USD":
        raise Invalid(f"provider price list {origin}: currency must be \"USD\" (Deepgram bills in USD)")
    raw = doc.get("price", [])
    if not isinstance(raw, list) or not raw:
        raise Invalid(f"provider price list {origin}: no [[price]] entries")
    where = f"provider price list {origin}, price"
    entries = tuple(_entry(item, f"{where} #{i + 1}") for i, item in enumerate(raw))
    seen: set[tuple[str, str, date | None]] = set()
    for i, e in enumerate(entries):
        key = (e.line_item, e.tier, e.effective_from)
        if key in seen:
            raise Invalid(
                f"provider price list {origin}, price #{i + 1}: a second entry for {e.line_item!r} "
                f"tier {e.tier!r} effective {e.effective_from or 'always'}"
            )
        seen.add(key)
    return PriceList(currency=currency, entries=entries, origin=origin)


def _entry(item: Any, where: str) -> ListPrice:
    if not isinstance(item, dict):
        raise Invalid(f"{where}: not a table")
    line_item = item.get("line_item")
    if not isinstance(line_item, str) or "::" not in line_item:
        raise Invalid(f"{where}: line_item must be a name like \"streaming::nova-3\"")
    where = f"{where} ({line_item})"
    tier = item.get("tier", DEFAULT_TIER)
    if not isinstance(tier, str) or not tier.strip():
        raise Invalid(f"{where}: tier must be a name such as \"pay-as-you-go\"")
    unit = item.get("unit")
    if unit not in PRICE_UNITS:
        raise Invalid(f"{where}: unit must be one of {', '.join(PRICE_UNITS)}, not {unit!r}")
    value = item.get("price")
    if not isinstance(value, str):
        raise Invalid(f"{where}: price must be a string holding an exact decimal (\"0.0043\"), not {value!r}")
    try:
        price = Decimal(value.strip())
    except InvalidOperation:
        raise Invalid(f"{where}: price {value!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise Invalid(f"{where}: price {value!r} must be a non-negative number")
    effective = item.get("effective_from")
    if isinstance(effective, datetime) or not (effective is None or isinstance(effective, date)):
        raise Invalid(f"{where}: effective_from must be a date (2026-05-05)")
    source = item.get("source", "")
    return ListPrice(line_item, tier.strip(), unit, price, effective, str(source))
