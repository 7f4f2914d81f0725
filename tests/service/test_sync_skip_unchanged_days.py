"""Incremental sync asks Deepgram's usage breakdown which look-back days changed and re-reads only those
(SQLite and PostgreSQL, dgemu over HTTP): unchanged days cost no request-log call, a late record in a
look-back day is still fetched (succeeded: the day's count differs; failed: the failed-only sweep), and a
failing breakdown falls back to re-reading the whole look-back."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from keyledger.core.errors import ProviderAuthError
from tests.service.test_sync_service import assert_ledger_equals_dgemu, service
from tests.usage_support import (
    add_connection,
    add_customer,
    add_key,
    faults,
    inject,
    make_requests,
)

LOOKBACK_DAYS = 3


class Recording:
    """The real adapter, recording every request-log listing it is asked for."""

    def __init__(self, inner, counts=None):
        self.inner = inner
        self.http = inner.http
        self.listings: list[tuple[datetime, datetime, bool]] = []
        self._counts = counts

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def iter_requests(self, *, start, end, limit):
        self.listings.append((start, end, False))
        return self.inner.iter_requests(start=start, end=end, limit=limit)

    def iter_failed_requests(self, *, start, end, limit):
        self.listings.append((start, end, True))
        return self.inner.iter_failed_requests(start=start, end=end, limit=limit)

    def daily_request_counts(self, *, start, end):
        if self._counts is not None:
            return self._counts(self.inner, start, end)
        return self.inner.daily_request_counts(start=start, end=end)


@pytest.fixture
def setup(engine, dgemu):
    add_connection(engine, base_url=dgemu.base_url, project_id=dgemu.project_id)
    add_customer(engine, "cus_a")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    return engine, dgemu


def now() -> datetime:
    return datetime.now(UTC)


def recording_service(engine, dgemu, counts=None):
    svc = service(engine, dgemu, sync_lookback_seconds=LOOKBACK_DAYS * 86400, sync_window_days=7)
    inner_open = svc.open_provider
    made: list[Recording] = []

    def open_provider(connection):
        made.append(Recording(inner_open(connection), counts))
        return made[-1]

    svc.open_provider = open_provider
    return svc, made


def day_start(t: datetime) -> datetime:
    return datetime.combine(t.astimezone(UTC).date(), time.min, tzinfo=UTC)


def failing(reqs: list[dict], code: int) -> list[dict]:
    """Failed requests, all of one shape (a failed record's rollup cell is ``<method>::unknown``)."""
    return [
        {"api_key_id": r["api_key_id"], "created": r["created"], "endpoint": "listen", "method": "sync",
         "model": "nova-3", "duration_seconds": 10, "code": code}
        for r in reqs
    ]


def seed(engine, dgemu):
    reqs = make_requests(3000, keys=["dg-a", "dg-x"], start=now() - timedelta(days=6), end=now())
    start = now() - timedelta(days=6)
    failed = failing(make_requests(20, keys=["dg-a"], start=start, end=now(), seed=5), 500)
    inject(dgemu, reqs + failed)


def test_unchanged_lookback_days_cost_no_request_log_call(setup):
    engine, dgemu = setup
    seed(engine, dgemu)
    svc, made = recording_service(engine, dgemu)
    [first] = svc.sync()
    assert first.inserted == 3020
    [again] = svc.sync()
    assert again.inserted == 0
    listings = made[-1].listings
    mark_start = day_start(again.window_end)
    full = [(s, e) for s, e, failed in listings if not failed]
    # every full listing starts at the watermark's day: no look-back day was re-read
    assert full and all(s >= mark_start for s, _e in full)
    # the failed-only sweep covers the look-back before that day, in one page
    assert [(s, e) for s, e, failed in listings if failed] == [(again.window_start, mark_start)]
    # billing/fields + usage breakdown + failed sweep + the watermark day's one page
    assert len(full) == 1 and again.api_calls == 4
    assert_ledger_equals_dgemu(engine, dgemu)


def test_late_records_in_a_lookback_day_are_fetched(setup):
    engine, dgemu = setup
    seed(engine, dgemu)
    svc, made = recording_service(engine, dgemu)
    svc.sync()
    late_day = day_start(now()) - timedelta(days=2)
    hour = timedelta(hours=1)
    late = make_requests(3, keys=["dg-a"], start=late_day + hour, end=late_day + 2 * hour, seed=11)
    yesterday = late_day + timedelta(days=1)
    late_failed = failing(
        make_requests(2, keys=["dg-a"], start=yesterday + hour, end=yesterday + 2 * hour, seed=12), 429
    )
    inject(dgemu, late + late_failed)
    [run] = svc.sync()
    assert run.inserted == 5
    full = [(s, e) for s, e, failed in made[-1].listings if not failed]
    assert (late_day, late_day + timedelta(days=1)) in full
    # the day of the failed ones (unchanged success count) was not re-read whole
    assert (yesterday, yesterday + timedelta(days=1)) not in full
    assert_ledger_equals_dgemu(engine, dgemu)


def _refused(inner, start, end):
    raise ProviderAuthError("Deepgram refused the key (403)")


def _unavailable(dgemu):
    def counts(inner, start, end):
        faults(dgemu, error_rate=1.0)
        try:
            return inner.daily_request_counts(start=start, end=end)
        finally:
            faults(dgemu, error_rate=0.0)

    return counts


@pytest.mark.parametrize("failure", ["403", "503"])
def test_a_failing_breakdown_falls_back_to_the_whole_lookback(setup, failure):
    engine, dgemu = setup
    seed(engine, dgemu)
    counts = _refused if failure == "403" else _unavailable(dgemu)
    svc, made = recording_service(engine, dgemu, counts)
    svc.sync()
    late_day = day_start(now()) - timedelta(days=2)
    inject(dgemu, make_requests(4, keys=["dg-a"], start=late_day, end=late_day + timedelta(hours=3), seed=13))
    [run] = svc.sync()
    assert run.status == "succeeded" and run.inserted == 4
    listings = made[-1].listings
    assert not any(failed for _s, _e, failed in listings)
    assert listings[0][0] == run.window_start  # the whole look-back, as before
    assert_ledger_equals_dgemu(engine, dgemu)


def test_parse_daily_request_counts_refuses_what_is_not_one_whole_count_per_day():
    from datetime import date
    from decimal import Decimal

    from keyledger.core.errors import ProviderError
    from keyledger.provider.deepgram.usage import parse_daily_request_counts

    row = {"requests": Decimal("12.0"), "grouping": {"start": "2026-11-20", "end": "2026-11-20"}}
    assert parse_daily_request_counts({"results": [row]}) == {date(2026, 11, 20): 12}
    for bad in (
        {"results": None},
        {"results": [{**row, "requests": Decimal("1.5")}]},
        {"results": [{"grouping": row["grouping"]}]},
        {"results": [{**row, "grouping": {"start": "2026-11-20", "end": "2026-11-21"}}]},
        {"results": [{**row, "grouping": {"start": "nope"}}]},
    ):
        with pytest.raises(ProviderError):
            parse_daily_request_counts(bad)
