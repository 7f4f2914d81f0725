"""Timestamps: integer microseconds since the Unix epoch (UTC) inside dgemu; ISO 8601 on the wire."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
_ONE_US = timedelta(microseconds=1)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACE_OFFSET = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """``2026-11-01T12:00:00.123456Z`` (always microseconds, always Z)."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_of(us: int) -> str:
    return from_us(us).strftime("%Y-%m-%d")


def day_start_us(us: int) -> int:
    return us - us % DAY_US


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date-time (``Z``, offsets, fractional seconds; naive = UTC). Raises ValueError."""
    if 19 <= len(value) <= 32 and value[10:11] == "T":
        try:  # fast path: Python 3.11 reads Z, offsets and 1-6 fractional digits itself
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                return dt.replace(tzinfo=UTC)
            return dt.astimezone(UTC)
    v = value.strip()
    if not v or len(v) > 64:
        raise ValueError("empty or too long")
    # an unencoded '+' in a query string arrives as a space
    v = _SPACE_OFFSET.sub(r"\1+\2", v)
    if v[-1] in "zZ":
        v = v[:-1] + "+00:00"
    if "t" in v and "T" not in v:
        v = v.replace("t", "T")
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_bound(value: str, *, end: bool) -> int:
    """A ``start``/``end`` query value → microseconds. A date means the whole day: ``start`` is its first
    instant, ``end`` its last microsecond (inclusive). A date-time is taken as is (inclusive)."""
    v = value.strip()
    if _DATE_RE.match(v):
        d = date.fromisoformat(v)
        us = to_us(datetime(d.year, d.month, d.day, tzinfo=UTC))
        return us + DAY_US - 1 if end else us
    return to_us(parse_datetime(v))
