"""Pure budget rules: parsing, periods in the customer's time zone, and evaluation.

:func:`evaluate` takes a budget, the period's spend so far and what already fired this period, and
answers what to fire now. It does no I/O, so the same inputs always give the same decisions and
concurrency is the service's problem (it serializes evaluations per customer and period).

Spend is the customer's **provider cost** (Deepgram's own per-request ``usd``) in the ledger for the
period: known at every sync, independent of plans and currencies, and exactly what a revoke protects the
operator from. Limits are therefore in USD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keyledger.core.errors import Invalid
from keyledger.core.money import to_decimal

DEFAULT_THRESHOLDS = (50, 80, 100)
ACTIONS = ("notify", "revoke")
PERIODS = ("month",)
#: The projected-spend alert waits until this share of the period has passed (early extrapolation is noise).
PROJECTION_MIN_ELAPSED = Decimal("0.10")

STATES = ("ok", "warning", "exceeded", "revoke_pending", "revoked", "reinstated")


def parse_limit(text: str) -> Decimal:
    value = to_decimal(text, "--limit")
    if value <= 0:
        raise Invalid(f"--limit must be a positive amount (USD), got {text!r}")
    if value.as_tuple().exponent < -10:  # type: ignore[operator]
        raise Invalid("--limit has more than 10 decimal places")
    if value >= Decimal("1e15"):
        raise Invalid("--limit is too large")
    return value


def parse_thresholds(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_THRESHOLDS
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise Invalid("--thresholds: give whole percents such as 50,80,100")
    values = []
    for p in parts:
        if not p.isdigit():
            raise Invalid(f"--thresholds: {p!r} is not a whole percent (e.g. 50,80,100)")
        v = int(p)
        if not 1 <= v <= 1000:
            raise Invalid(f"--thresholds: {v} is outside 1..1000")
        values.append(v)
    if len(set(values)) != len(values):
        raise Invalid("--thresholds: each percent once")
    return tuple(sorted(values))


def parse_action(text: str) -> str:
    if text not in ACTIONS:
        raise Invalid(f"--action must be one of {', '.join(ACTIONS)}, got {text!r}")
    return text


def parse_period(text: str) -> str:
    if text not in PERIODS:
        raise Invalid(f"--period must be one of {', '.join(PERIODS)}, got {text!r}")
    return text


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"time zone {name!r} is not known") from None


@dataclass(frozen=True)
class Period:
    key: str  # YYYY-MM in the customer's calendar
    starts_at: datetime  # UTC instant of local midnight on the first day
    ends_at: datetime  # exclusive

    @property
    def length(self) -> timedelta:
        return self.ends_at - self.starts_at


def period_at(at: datetime, tz: str) -> Period:
    """The calendar month containing ``at`` in the customer's time zone, as UTC instants."""
    z = zone(tz)
    local = at.astimezone(z)
    first = date(local.year, local.month, 1)
    nxt = date(local.year + (local.month == 12), local.month % 12 + 1, 1)
    lo = datetime.combine(first, time(0), tzinfo=z).astimezone(UTC)
    hi = datetime.combine(nxt, time(0), tzinfo=z).astimezone(UTC)
    return Period(f"{first.year:04d}-{first.month:02d}", lo, hi)


@dataclass(frozen=True)
class Budget:
    customer_id: str
    limit: Decimal
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    action: str = "notify"
    period: str = "month"


@dataclass(frozen=True)
class Decision:
    fire: tuple[int, ...] = ()  # thresholds crossed for the first time this period
    projected: Decimal | None = None  # set when the projected-spend alert fires now
    enforce: bool = False  # action revoke and 100 % crossed for the first time
    state: str = "ok"
    percent: Decimal = Decimal(0)
    fired_after: tuple[int, ...] = field(default=())


def percent_of(spent: Decimal, limit: Decimal) -> Decimal:
    return spent * 100 / limit


def projection(spent: Decimal, period: Period, now: datetime) -> Decimal | None:
    """The period's spend extrapolated linearly from what was spent so far (None too early to tell)."""
    total = Decimal(int(period.length.total_seconds()))
    seconds = min(max((now - period.starts_at).total_seconds(), 0), period.length.total_seconds())
    elapsed = Decimal(int(seconds))
    if total <= 0 or elapsed < total * PROJECTION_MIN_ELAPSED:
        return None
    return spent * total / elapsed


def evaluate(
    budget: Budget,
    *,
    spent: Decimal,
    period: Period,
    now: datetime,
    fired: tuple[int, ...] = (),
    projected_fired: bool = False,
    state: str = "ok",
) -> Decision:
    """What crossing ``spent`` means now, given what already fired this period."""
    if not isinstance(spent, Decimal):
        raise TypeError("spent must be Decimal")
    pct = percent_of(spent, budget.limit)
    already = set(fired)
    fire = tuple(t for t in budget.thresholds if pct >= t and t not in already)
    # The cap (100 %) is recorded as fired even when it is not an alert threshold: the action runs once.
    cap_now = pct >= 100 and 100 not in already
    fired_after = tuple(sorted(already | set(fire) | ({100} if cap_now else set())))
    enforce = budget.action == "revoke" and cap_now and state not in ("revoke_pending", "revoked")
    projected = None
    if not projected_fired and pct < 100:
        p = projection(spent, period, now)
        if p is not None and p >= budget.limit:
            projected = p
    if state in ("revoke_pending", "revoked", "reinstated"):
        new_state = state
    elif enforce:
        new_state = "revoke_pending"
    elif pct >= 100:
        new_state = "exceeded"
    elif fired_after:
        new_state = "warning"
    else:
        new_state = "ok"
    return Decision(
        fire=fire, projected=projected, enforce=enforce, state=new_state, percent=pct, fired_after=fired_after
    )
