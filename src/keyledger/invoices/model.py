"""Pure invoice rules: states and allowed transitions, numbers, period boundaries, credit limits."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Context, Decimal, Inexact
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keyledger.core.errors import Conflict, Invalid
from keyledger.core.money import format_amount, minor_units


class Status(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"


class Action(StrEnum):
    FINALIZE = "finalize"
    MARK_PAID = "mark-paid"
    VOID = "void"
    REBUILD = "rebuild"
    CREDIT = "credit"


# (action, from) -> to. Everything not listed is refused.
TRANSITIONS: dict[tuple[Action, Status], Status] = {
    (Action.REBUILD, Status.DRAFT): Status.DRAFT,
    (Action.FINALIZE, Status.DRAFT): Status.FINALIZED,
    (Action.MARK_PAID, Status.FINALIZED): Status.PAID,
    (Action.VOID, Status.FINALIZED): Status.VOID,
    (Action.CREDIT, Status.FINALIZED): Status.FINALIZED,
    (Action.CREDIT, Status.PAID): Status.PAID,
}

_WHY = {
    Status.DRAFT: "it is a draft (finalize it first)",
    Status.FINALIZED: "it is already finalized",
    Status.PAID: "it is paid (issue a credit note to correct it)",
    Status.VOID: "it is void",
}


def transition(status: Status | str, action: Action, label: str) -> Status:
    """The status after ``action``, or Conflict naming the invoice and why."""
    status = Status(status)
    to = TRANSITIONS.get((action, status))
    if to is None:
        raise Conflict(f"cannot {action.value} invoice {label}: {_WHY[status]}")
    return to


def format_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year:04d}-{seq:06d}"


def counter_name(prefix: str, year: int) -> str:
    return f"{prefix}-{year:04d}"


def validate_prefix(prefix: str) -> str:
    p = prefix.strip()
    if not p or len(p) > 20 or not all(ch.isalnum() or ch in "_." for ch in p):
        raise Invalid(f"number prefix {prefix!r}: use 1-20 letters, digits, '_' or '.'")
    return p


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"time zone {name!r} is not known") from None


@lru_cache(maxsize=4096)  # a run asks it for every customer; it depends on the period and time zone only
def local_bounds(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants of local midnight at ``start`` and ``end`` in ``tz`` ([start, end) in UTC)."""
    z = zone(tz)
    lo = datetime.combine(start, time(0), tzinfo=z).astimezone(UTC)
    hi = datetime.combine(end, time(0), tzinfo=z).astimezone(UTC)
    return lo, hi


def local_month(at: datetime, tz: str) -> str:
    """The YYYY-MM a UTC instant falls in, in the customer's calendar."""
    local = at.astimezone(zone(tz))
    return f"{local.year:04d}-{local.month:02d}"


Shard = tuple[int, int]  # (index, count): index in 0..count-1


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (``0 <= I < N``) as ``(I, N)``."""
    index, _, count = text.partition("/")
    try:
        return check_shard((int(index), int(count)))
    except (ValueError, Invalid):
        raise Invalid(f"shard {text!r}: use I/N with 0 <= I < N (e.g. 0/4)") from None


def check_shard(shard: Shard) -> Shard:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise Invalid(f"shard {index}/{count}: use I/N with 0 <= I < N (e.g. 0/4)")
    return shard


def shard_of(customer_id: str, count: int) -> int:
    """The shard (0..count-1) a customer belongs to: a stable hash of its id (the same in every process
    and every Python version, unlike ``hash``), so N workers with shards 0/N..N-1/N split a run."""
    return zlib.crc32(customer_id.encode()) % count


@dataclass(frozen=True)
class Creditable:
    """What is left to credit on an invoice (its totals minus the credit notes issued so far)."""

    subtotal: Decimal
    tax: Decimal

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax


def remaining(subtotal: Decimal, tax: Decimal, credited: list[tuple[Decimal, Decimal]]) -> Creditable:
    return Creditable(
        subtotal - sum((c[0] for c in credited), Decimal(0)),
        tax - sum((c[1] for c in credited), Decimal(0)),
    )


def check_credit(sub: Decimal, tax: Decimal, left: Creditable, currency: str, label: str) -> None:
    if sub <= 0:
        raise Invalid("a credit note must credit a positive amount")
    if sub > left.subtotal or tax > left.tax:
        raise Conflict(
            f"credit of {format_amount(sub + tax)} {currency} exceeds what is left to credit on invoice "
            f"{label}: {format_amount(left.total)} {currency} "
            f"({format_amount(left.subtotal)} before tax)"
        )


# Exact contexts for display normalisation: they raise rather than round.
_EXACT_DISPLAY = Context(prec=200, traps=[Inexact])


def money_str(amount: Decimal, currency: str) -> str:
    """An amount that is already rounded (a line, a sum of lines, a tax) written with exactly the
    currency's minor units (``"12.30"``). Never rounds: an amount with more digits raises."""
    quantum = Decimal(1).scaleb(-minor_units(currency))
    return format_amount(amount.quantize(quantum, context=_EXACT_DISPLAY))


def num_str(value: Decimal | None) -> str | None:
    """A quantity, unit price or provider cost without trailing zeros (exact: ``"0.043"``, ``"10"``)."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return format_amount(value.quantize(Decimal(1), context=_EXACT_DISPLAY))
    return format_amount(value.normalize(_EXACT_DISPLAY))


# ---------------------------------------------------------------------------- usage claims (rectangles)


@dataclass(frozen=True, order=True)
class Rect:
    """A usage claim's shape: the records of one customer created in [lo, hi) with after < id <= upto."""

    lo: datetime
    hi: datetime
    after: int
    upto: int


def claim_gaps(lo: datetime, hi: datetime, hw: int, claims: list[Rect]) -> list[Rect]:
    """What a claim of the window [lo, hi) up to the high-water mark ``hw`` takes, given the customer's
    existing claims: the window is cut at the existing claims' time edges; in each piece the union of
    the claims covering it leaves gaps in (0, hw]; each (piece, gap) is a rectangle. Consecutive pieces
    with the same gaps are merged. The rectangles overlap neither each other nor ``claims``, and with
    ``claims`` they cover every (instant in [lo, hi), id in (0, hw]).
    No existing claim: one rectangle [lo, hi) x (0, hw]."""
    inside = [c for c in claims if c.lo < hi and c.hi > lo]
    cuts = sorted({lo, hi} | {t for c in inside for t in (c.lo, c.hi) if lo < t < hi})
    out: list[Rect] = []
    run_lo: datetime | None = None
    run_gaps: list[tuple[int, int]] | None = None
    for a, b in zip(cuts, cuts[1:], strict=False):
        gaps: list[tuple[int, int]] = []
        at = 0
        for after, upto in sorted((c.after, c.upto) for c in inside if c.lo <= a and c.hi >= b):
            if min(after, hw) > at:
                gaps.append((at, min(after, hw)))
            at = max(at, upto)
        if at < hw:
            gaps.append((at, hw))
        if gaps != run_gaps:
            if run_lo is not None and run_gaps:
                out += [Rect(run_lo, a, x, y) for x, y in run_gaps]
            run_lo, run_gaps = a, gaps
    if run_lo is not None and run_gaps:
        out += [Rect(run_lo, hi, x, y) for x, y in run_gaps]
    return out
