"""dgemu's RecordLog keeps every list sorted whatever order records are added in: older records are merged
at once when the newer tail is short, else the list is sorted at the next read."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from dgemu import store as dgemu_store
from dgemu.store import Record, RecordLog


def record(i: int, created_us: int) -> Record:
    return Record(
        request_id=f"r-{i:05d}",
        created_us=created_us,
        api_key_id="key-a" if i % 3 else "key-b",
        path="/v1/listen",
        code=200 if i % 7 else 500,
        deployment="hosted",
        endpoint="listen",
        method="sync" if i % 2 else "streaming",
        model="nova-3",
        line_item="sync::nova-3",
        duration=Decimal(1),
        total_audio=Decimal(1),
        channels=1,
        streams=1,
        characters=0,
        tokens_in=0,
        tokens_out=0,
        usd=Decimal("0.0043"),
        tags=(),
        features=(),
        config=None,
        completed_us=created_us,
        visible_us=created_us,
    )


@pytest.mark.parametrize("eager_max", [0, 25, 10**9], ids=["always-lazy", "mixed", "always-eager"])
def test_lists_stay_sorted_whatever_the_order_of_additions(monkeypatch, eager_max) -> None:
    monkeypatch.setattr(dgemu_store, "EAGER_MERGE_MAX", eager_max)
    rng = random.Random(eager_max)
    times = [rng.randrange(10**6) for _ in range(400)]
    records = [record(i, t) for i, t in enumerate(times)]
    order = list(range(400))
    rng.shuffle(order)
    log = RecordLog()
    for lo in range(0, 400, 23):
        log.add([records[i] for i in order[lo : lo + 23]])
        # a read in between: lists are sorted before they are sliced
        lst, lo_i, hi_i = log.window({}, None, None)
        assert [r.created_us for r in lst[lo_i:hi_i]] == sorted(r.created_us for r in lst[lo_i:hi_i])
    key = dgemu_store._sort_key
    assert log.candidates({}) == sorted(records, key=key)
    for value in ("key-a", "key-b"):
        expected = sorted((r for r in records if r.api_key_id == value), key=key)
        assert log.candidates({"accessor": value}) == expected
    assert log.candidates({"status": "failed"}) == sorted((r for r in records if r.code >= 300), key=key)
