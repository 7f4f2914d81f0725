"""Pure rules of the usage ledger: sync windows, dedupe, rollup math, date and period parsing. No I/O.

Sync windows. A run reads the closed interval ``[start, end]`` where ``end = now - settle`` is fixed in
the past for the whole run (records still being written are not read), and ``start`` is the watermark
minus the look-back (late records appear after the fact), or the operator's ``--since``. The interval is
cut into windows of at most ``window_days``; consecutive windows share their boundary instant (the API's
``end`` is inclusive, so a record exactly there is read twice and deduped, never skipped).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from keyledger.core.errors import Invalid
from keyledger.provider.port import UsageRecord

#: Deepgram keeps request logs for 90 days; a first sync reads that far back.
RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime  # inclusive


def sync_interval(
    *,
    now: datetime,
    watermark: datetime | None,
    settle_seconds: int,
    lookback_seconds: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Window | None:
    """The interval a run reads, or None when there is nothing settled to read yet."""
    end = now - timedelta(seconds=settle_seconds)
    if until is not None:
        end = min(end, until)
    if since is not None:
        start = since
    elif watermark is not None:
        start = min(watermark, end) - timedelta(seconds=lookback_seconds)
    else:
        start = end - RETENTION
    start = max(start, now - RETENTION)
    if start >= end:
        return None
    return Window(start, end)


def split_windows(interval: Window, window_days: int) -> list[Window]:
    """Oldest first, each at most ``window_days`` long, adjacent windows sharing their boundary."""
    span = timedelta(days=max(1, window_days))
    out: list[Window] = []
    s = interval.start
    while True:
        e = min(s + span, interval.end)
        out.append(Window(s, e))
        if e >= interval.end:
            return out
        s = e


def next_watermark(current: datetime | None, window: Window) -> datetime | None:
    """The watermark after ``window`` is committed: advanced only when the window joins what is covered."""
    if current is None or (window.start <= current < window.end):
        return window.end
    return current


def dedupe(records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """Records with each request_id once (the first seen wins)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.request_id not in seen:
            seen.add(r.request_id)
            out.append(r)
    return out


@dataclass
class RollupCell:
    unit: str
    quantity: Decimal
    cost_usd: Decimal
    requests: int


def rollup(records: Iterable[UsageRecord]) -> dict[tuple[str, date, str], RollupCell]:
    """Daily rollup keyed by (api_key_id, UTC day, line_item): exact sums of quantity and cost."""
    cells: dict[tuple[str, date, str], RollupCell] = {}
    for r in records:
        key = (r.api_key_id, r.created.astimezone(UTC).date(), r.line_item)
        cell = cells.get(key)
        if cell is None:
            cells[key] = RollupCell(r.unit, r.quantity, r.cost_usd, 1)
        else:
            cell.quantity += r.quantity
            cell.cost_usd += r.cost_usd
            cell.requests += 1
    return cells


# --------------------------------------------------------------------------- dates and periods


def parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None


def parse_instant_option(value: str, option: str, *, end_of_day: bool = False) -> datetime:
    """A CLI date or datetime as a UTC instant; a bare date means its start (or its end, inclusive)."""
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            if end_of_day:
                return datetime.combine(d, time.max, tzinfo=UTC)
            return datetime.combine(d, time.min, tzinfo=UTC)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{option}: {value!r} is not a date (use YYYY-MM-DD or an ISO 8601 time)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_period(value: str) -> tuple[date, date]:
    """``YYYY-MM`` → (first day, last day), inclusive."""
    text = value.strip()
    try:
        year_s, month_s = text.split("-")
        if len(year_s) != 4 or len(month_s) != 2 or not text.isascii():  # int() reads "２０２６" too
            raise ValueError
        year, month = int(year_s), int(month_s)
        if not 1 <= month <= 12:
            raise ValueError
    except ValueError:
        raise Invalid(f"--period: {value!r} is not a month (use YYYY-MM)") from None
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def month_of(day: date) -> tuple[date, date]:
    return date(day.year, day.month, 1), date(
        day.year, day.month, calendar.monthrange(day.year, day.month)[1]
    )
