"""Pure rules of the usage ledger: windows never leave gaps, watermark moves only forward over covered
time, dedupe and rollup sums are exact."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyledger.core.errors import Invalid
from keyledger.provider.port import UsageRecord
from keyledger.usage import model

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rec(rid: str, created: datetime, key="k1", item="sync::nova-3", qty="1.5", usd="0.0064500000"):
    return UsageRecord(
        rid, key, created, "listen", "sync", "nova-3", item, "minute", Decimal(qty), Decimal(usd)
    )


def test_interval_first_run_reads_retention_and_stops_before_settle():
    w = model.sync_interval(now=NOW, watermark=None, settle_seconds=120, lookback_seconds=3600)
    assert w.end == NOW - timedelta(seconds=120)
    assert w.start == w.end - model.RETENTION or w.start == NOW - model.RETENTION


def test_interval_rereads_lookback_before_watermark():
    wm = NOW - timedelta(hours=1)
    w = model.sync_interval(now=NOW, watermark=wm, settle_seconds=120, lookback_seconds=600)
    assert w.start == wm - timedelta(seconds=600) and w.end == NOW - timedelta(seconds=120)


def test_interval_empty_when_nothing_settled():
    wm = NOW - timedelta(seconds=60)
    assert model.sync_interval(now=NOW, watermark=wm, settle_seconds=120, lookback_seconds=0) is None


def test_until_caps_end_and_since_overrides_watermark():
    w = model.sync_interval(
        now=NOW,
        watermark=NOW,
        settle_seconds=120,
        lookback_seconds=0,
        since=NOW - timedelta(days=2),
        until=NOW - timedelta(days=1),
    )
    assert (w.start, w.end) == (NOW - timedelta(days=2), NOW - timedelta(days=1))


@given(
    start_min=st.integers(min_value=0, max_value=10**7),
    length=st.integers(min_value=1, max_value=10**7),
    days=st.integers(min_value=1, max_value=30),
)
def test_windows_cover_interval_without_gaps(start_min, length, days):
    start = NOW - timedelta(seconds=start_min + length)
    interval = model.Window(start, start + timedelta(seconds=length))
    windows = model.split_windows(interval, days)
    assert windows[0].start == interval.start and windows[-1].end == interval.end
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end == b.start  # shared boundary: inclusive end, nothing skipped
    assert all(w.end - w.start <= timedelta(days=days) for w in windows)
    assert len(windows) == -(-length // (days * 86400))


def test_watermark_advances_only_over_covered_time():
    a = NOW - timedelta(days=3)
    w = model.Window(NOW - timedelta(days=4), NOW - timedelta(days=2))
    assert model.next_watermark(None, w) == w.end
    assert model.next_watermark(a, w) == w.end
    # a window after a gap (operator's --since beyond the watermark) does not move it
    gap = model.Window(NOW - timedelta(days=1), NOW)
    assert model.next_watermark(a, gap) == a
    # a window wholly before the watermark (look-back) does not move it back
    old = model.Window(NOW - timedelta(days=10), NOW - timedelta(days=5))
    assert model.next_watermark(a, old) == a


def test_dedupe_keeps_first():
    t = NOW
    out = model.dedupe([rec("a", t), rec("b", t), rec("a", t + timedelta(seconds=1))])
    assert [r.request_id for r in out] == ["a", "b"] and out[0].created == t


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["k1", "k2"]),
            st.integers(0, 3),
            st.decimals(min_value=0, max_value=1000, places=10),
        ),
        max_size=50,
    )
)
def test_rollup_sums_are_exact(items):
    records = [rec(f"r{i}", NOW - timedelta(days=d), key=k, usd=str(u)) for i, (k, d, u) in enumerate(items)]
    cells = model.rollup(records)
    assert sum(c.requests for c in cells.values()) == len(records)
    assert sum((c.cost_usd for c in cells.values()), Decimal(0)) == sum(
        (r.cost_usd for r in records), Decimal(0)
    )


def test_dates_and_periods():
    assert model.parse_period("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert model.parse_period("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    for bad in ("2026-13", "26-01", "2026/01", "nope"):
        with pytest.raises(Invalid):
            model.parse_period(bad)
    with pytest.raises(Invalid):
        model.parse_date("2026-02-30", "--from")
    assert model.parse_instant_option("2026-11-02", "--until", end_of_day=True) == datetime(
        2026, 11, 2, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert model.parse_instant_option("2026-11-02T10:00:00+01:00", "--since") == datetime(
        2026, 11, 2, 9, tzinfo=UTC
    )
    with pytest.raises(Invalid):
        model.parse_instant_option("yesterday", "--since")
