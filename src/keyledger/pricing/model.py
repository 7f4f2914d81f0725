"""Pure plan types: a validated plan version, its rates and tiers, the billing period, usage and priced
lines. No I/O. Every number is a ``Decimal``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

from keyledger.core.errors import Invalid
from keyledger.core.money import format_amount


class Mode(StrEnum):
    PASS_THROUGH = "pass_through"
    COST_PLUS = "cost_plus"
    RATE_CARD = "rate_card"


class TierMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


class ByoPricing(StrEnum):
    ZERO = "zero"  # a BYO customer's usage is shown at zero (they pay Deepgram directly): the default
    PLAN = "plan"  # BYO usage is priced like any other usage under this plan


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Pattern:
    """A line-item pattern: ``*`` matches any run of characters (including none); nothing else is special.

    Specificity (most specific wins): an exact name beats any wildcard; then the longer literal prefix
    (the text before the first ``*``); then more literal characters; then fewer wildcards. Literal
    characters come before the wildcard count so that ``*::*`` beats ``*`` (it matches a subset of what
    ``*`` matches). Two matching patterns equal on all four are ambiguous: rating refuses to guess.
    """

    text: str

    @property
    def wildcards(self) -> int:
        return self.text.count("*")

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        prefix = self.text.split("*", 1)[0]
        literal = len(self.text) - self.wildcards
        return (1 if self.wildcards == 0 else 0, len(prefix), literal, -self.wildcards)

    def matches(self, line_item: str) -> bool:
        return _compile(self.text).fullmatch(line_item) is not None


@lru_cache(maxsize=4096)
def _compile(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)


def most_specific(patterns: list[Pattern], line_item: str, what: str) -> Pattern | None:
    """The most specific pattern matching ``line_item``, None when none matches; a tie is an error."""
    matching = [p for p in patterns if p.matches(line_item)]
    if not matching:
        return None
    matching.sort(key=lambda p: p.specificity, reverse=True)
    if len(matching) > 1 and matching[0].specificity == matching[1].specificity:
        raise Invalid(
            f"line item {line_item!r} matches {what} {matching[0].text!r} and {matching[1].text!r} "
            "equally; add a more specific pattern"
        )
    return matching[0]


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive upper bound in the rate's unit; None: no bound (the last tier)
    price: Decimal


@dataclass(frozen=True)
class Rate:
    pattern: Pattern
    unit: str
    price: Decimal | None = None  # flat per-unit price, or
    tiers: tuple[Tier, ...] = ()  # tiers with a tier_mode
    tier_mode: TierMode | None = None


@dataclass(frozen=True)
class Included:
    pattern: Pattern
    quantity: Decimal  # per period, in the unit of the rate that prices each matched line item


@dataclass(frozen=True)
class Plan:
    """One validated plan version (what a plan file says)."""

    id: str
    name: str
    currency: str
    mode: Mode
    effective_from: date
    markup_percent: Decimal = Decimal(0)
    base_fee: Decimal = Decimal(0)
    minimum: Decimal = Decimal(0)
    tax_percent: Decimal = Decimal(0)
    rates: tuple[Rate, ...] = ()
    included: tuple[Included, ...] = ()
    exchange_rates: tuple[tuple[str, Decimal], ...] = ()  # ("YYYY-MM", USD -> plan currency), sorted
    byo_pricing: ByoPricing = ByoPricing.ZERO
    description: str = ""

    def exchange_rate(self, period: Period) -> Decimal:
        """USD -> plan currency for the period: 1 for USD plans; a missing rate is an error, never a guess."""
        if self.currency == "USD":
            return Decimal(1)
        for key, value in self.exchange_rates:
            if key == period.key:
                return value
        raise Invalid(
            f"plan {self.id!r} bills in {self.currency} but has no exchange rate for {period.key}; "
            f"add exchange_rates: {{\"{period.key}\": \"<USD to {self.currency}>\"}} to the plan, import it"
        )

    def memo(self, name: str) -> dict[Any, Any]:
        """A cache of what pricing derives from this version, kept on the instance (not a field: equality,
        hashing, ``replace`` and ``to_dict`` ignore it). Valid for the instance's life because a plan
        version is immutable; a different version is a different instance with its own cache. Only
        successful results are cached, so a lookup that raises raises every time."""
        memos = self.__dict__.get("_memos")
        if memos is None:
            memos = {}
            object.__setattr__(self, "_memos", memos)
        memo = memos.get(name)
        if memo is None:
            memo = memos[name] = {}
        return memo

    def rate_for(self, line_item: str) -> Rate | None:
        memo = self.memo("rate_for")
        if line_item in memo:
            return memo[line_item]
        pattern = most_specific([r.pattern for r in self.rates], line_item, "rates")
        rate = None if pattern is None else next(r for r in self.rates if r.pattern == pattern)
        memo[line_item] = rate
        return rate

    def included_for(self, line_item: str) -> Included | None:
        memo = self.memo("included_for")
        if line_item in memo:
            return memo[line_item]
        pattern = most_specific([i.pattern for i in self.included], line_item, "included")
        inc = None if pattern is None else next(i for i in self.included if i.pattern == pattern)
        memo[line_item] = inc
        return inc

    def to_dict(self) -> dict[str, Any]:
        """The canonical plain form (decimals as strings); ``plans.plan_from_dict`` reads it back."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "currency": self.currency,
            "mode": self.mode.value,
            "effective_from": self.effective_from.isoformat(),
            "markup_percent": format_amount(self.markup_percent),
            "base_fee": format_amount(self.base_fee),
            "minimum": format_amount(self.minimum),
            "tax_percent": format_amount(self.tax_percent),
            "byo_pricing": self.byo_pricing.value,
            "exchange_rates": {k: format_amount(v) for k, v in self.exchange_rates},
            "rates": {r.pattern.text: _rate_dict(r) for r in self.rates},
            "included": {i.pattern.text: format_amount(i.quantity) for i in self.included},
        }
        if self.description:
            out["description"] = self.description
        return out

    def same_terms(self, other: Plan) -> bool:
        """Whether two versions charge the same (decimals by value), whatever their effective dates."""
        return replace(self, effective_from=other.effective_from) == other


def _rate_dict(rate: Rate) -> dict[str, Any]:
    out: dict[str, Any] = {"unit": rate.unit}
    if rate.price is not None:
        out["price"] = format_amount(rate.price)
    else:
        out["tier_mode"] = rate.tier_mode.value if rate.tier_mode else None
        out["tiers"] = [
            {"up_to": None if t.up_to is None else format_amount(t.up_to), "price": format_amount(t.price)}
            for t in rate.tiers
        ]
    return out


# --------------------------------------------------------------------------- periods, usage, priced lines


@dataclass(frozen=True)
class Period:
    """A billing period ``[start, end)`` in the customer's calendar; ``key`` names it (``YYYY-MM``)."""

    start: date
    end: date

    @classmethod
    def month(cls, key: str) -> Period:
        m = re.fullmatch(r"(\d{4})-(\d{2})", key.strip(), re.ASCII)  # not "２０２６-01"
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise Invalid(f"period {key!r}: use YYYY-MM")
        year, month = int(m.group(1)), int(m.group(2))
        start = date(year, month, 1)
        end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return cls(start, end)

    @property
    def key(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"


@dataclass(frozen=True)
class UsageLine:
    """A period's usage of one line item, as the ledger sums it (ledger units: minute|character|token)."""

    line_item: str
    unit: str
    quantity: Decimal
    provider_cost_usd: Decimal
    byo: bool = False  # usage on the customer's own Deepgram account


@dataclass(frozen=True)
class PricedLine:
    """One invoice line. ``amount`` is rounded once (round_money); the totals are sums of these."""

    kind: str  # usage | included | byo | base_fee | minimum
    description: str
    line_item: str | None
    unit: str | None
    quantity: Decimal | None
    unit_price: Decimal | None  # None where the charge is not quantity x price (pass-through, cost-plus)
    amount: Decimal
    provider_cost_usd: Decimal
    rate: str | None = None  # the rate pattern (rate_card) or the mode that priced the line

    def to_dict(self) -> dict[str, Any]:
        def num(v: Decimal | None) -> str | None:
            return None if v is None else format_amount(v)

        return {
            "kind": self.kind,
            "description": self.description,
            "line_item": self.line_item,
            "unit": self.unit,
            "quantity": num(self.quantity),
            "unit_price": num(self.unit_price),
            "amount": format_amount(self.amount),
            "provider_cost_usd": format_amount(self.provider_cost_usd),
            "rate": self.rate,
        }


@dataclass(frozen=True)
class RatedPeriod:
    """A period's charges under one plan version: lines, subtotal (sum of lines), tax, total."""

    plan_id: str
    currency: str
    period: Period
    exchange_rate: Decimal  # USD -> currency used for this period (1 for USD)
    lines: tuple[PricedLine, ...]
    subtotal: Decimal
    tax_percent: Decimal
    tax: Decimal
    total: Decimal
    provider_cost_usd: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "currency": self.currency,
            "period": self.period.key,
            "exchange_rate": format_amount(self.exchange_rate),
            "subtotal": format_amount(self.subtotal),
            "tax_percent": format_amount(self.tax_percent),
            "tax": format_amount(self.tax),
            "total": format_amount(self.total),
            "provider_cost_usd": format_amount(self.provider_cost_usd),
            "lines": [line.to_dict() for line in self.lines],
        }


# --------------------------------------------------------------------------- stored versions


@dataclass(frozen=True)
class PlanVersion:
    """A plan version as stored: immutable; ``id`` is what an invoice records to re-rate exactly."""

    id: str
    plan_id: str
    version: int
    effective_from: date
    imported_at: datetime
    source_name: str
    source_format: str
    content_hash: str
    plan: Plan

    def to_dict(self, *, definition: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "plan_id": self.plan_id,
            "version": self.version,
            "effective_from": self.effective_from.isoformat(),
            "imported_at": self.imported_at.isoformat(),
            "source_name": self.source_name,
            "content_hash": self.content_hash,
        }
        if definition:
            out["definition"] = self.plan.to_dict()
        return out
