"""The request log's page reader (provider/deepgram/usage.py): read ahead on a thread, in order, with the
plain loop's calls, its errors raised in the caller's turn, and no thread left behind."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from keyledger.core.errors import ProviderError
from keyledger.provider.deepgram import DeepgramProvider
from keyledger.provider.deepgram import usage as usage_module
from keyledger.provider.port import ProviderCredentials
from tests.usage_support import faults, inject, make_requests

PAGE = 10


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dg-page-reader"]


@pytest.fixture
def provider(dgemu):
    inject(
        dgemu,
        make_requests(
            95,
            keys=["dg-a"],
            start=datetime.now(UTC) - timedelta(hours=3),
            end=datetime.now(UTC) - timedelta(hours=1),
        ),
    )
    p = DeepgramProvider(
        ProviderCredentials(dgemu.base_url, dgemu.project_id, dgemu.owner_key),
        max_retries=0,
        backoff_base=0.01,
        backoff_cap=0.02,
    )
    yield p
    p.close()


def window() -> dict:
    now = datetime.now(UTC)
    return {"start": now - timedelta(days=1), "end": now, "limit": PAGE}


def test_pages_arrive_in_order_with_the_plain_loops_calls(provider) -> None:
    pages = list(provider.iter_requests(**window()))
    assert [p.page for p in pages] == list(range(10))
    assert [p.returned for p in pages] == [PAGE] * 9 + [5]
    ids = [r.request_id for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == 95
    created = [r.created for p in pages for r in p.records]
    assert created == sorted(created, reverse=True)
    assert provider.http.calls == 10  # ceil(95 / 10): no call beyond the short page
    assert readers() == []


def test_a_caller_that_stops_early_stops_the_reader(provider, monkeypatch) -> None:
    monkeypatch.setattr(usage_module, "READ_AHEAD_PAGES", 2)
    pages = provider.iter_requests(**window())
    first = next(pages)
    assert first.page == 0
    pages.close()
    assert readers() == []
    assert provider.http.calls <= 1 + 2 + 1  # the taken page, the queue, one in the reader's hands


def test_an_error_is_raised_in_the_callers_turn_and_ends_the_reading(provider, dgemu) -> None:
    faults(dgemu, error_rate=1.0)
    pages = provider.iter_requests(**window())
    with pytest.raises(ProviderError):
        next(pages)
    assert provider.http.calls == 1  # the first page failed: nothing further was asked for
    assert readers() == []
