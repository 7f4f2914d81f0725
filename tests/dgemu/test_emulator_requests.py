"""dgemu request log: pagination, every filter, every start/end form, request get."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

BASE = datetime(2026, 10, 5, 12, 0, 0, tzinfo=UTC)


def inject(dgemu, items: list[dict]) -> None:
    with dgemu.client() as c:
        r = c.post(f"/_emulator/projects/{dgemu.project_id}/requests", json={"requests": items})
        assert r.status_code == 200, r.text
        assert r.json() == {"created": len(items)}


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def listing(dgemu, **params) -> dict:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/requests", params=params)
        assert r.status_code == 200, r.text
        return r.json()


def ids(dgemu, **params) -> list[str]:
    return [x["request_id"] for x in listing(dgemu, limit=1000, **params)["requests"]]


@pytest.fixture
def seeded(dgemu):
    """45 records one minute apart; two keys; listen/speak; sync/streaming; 5 failures."""
    items = []
    for i in range(45):
        speak = i % 3 == 0
        items.append(
            {
                "request_id": f"req-{i:03d}",
                "api_key_id": "key-a" if i % 2 == 0 else "key-b",
                "created": iso(BASE + timedelta(minutes=i)),
                "endpoint": "speak" if speak else "listen",
                "method": "sync" if speak or i % 4 else "streaming",
                "model": "aura-2-thalia-en" if speak else "nova-3",
                **({"characters": 100} if speak else {"duration_seconds": 30}),
                **({"code": 400} if i % 9 == 1 else {}),
            }
        )
    inject(dgemu, items)
    return items


def test_newest_first_and_pages_have_no_skip_or_dup(dgemu, seeded) -> None:
    seen: list[str] = []
    page = 0
    while True:
        body = listing(dgemu, limit=7, page=page)
        assert body["page"] == page and body["limit"] == 7
        got = [x["request_id"] for x in body["requests"]]
        seen += got
        if len(got) < 7:
            break
        page += 1
    assert page == 6  # 45 = 6 * 7 + 3
    assert seen == [f"req-{i:03d}" for i in range(44, -1, -1)]
    created = [x["created"] for x in listing(dgemu, limit=1000)["requests"]]
    assert created == sorted(created, reverse=True)
    assert listing(dgemu, limit=10, page=100)["requests"] == []


def test_limit_and_page_parsing(dgemu, seeded) -> None:
    assert len(listing(dgemu)["requests"]) == 10  # default limit
    assert listing(dgemu)["page"] == 0
    assert len(listing(dgemu, limit="5.0")["requests"]) == 5
    assert listing(dgemu, limit="5.0", page="1.0")["requests"][0]["request_id"] == "req-039"
    assert len(listing(dgemu, limit=1000)["requests"]) == 45
    with dgemu.client() as c:
        for bad in (
            {"limit": 0},
            {"limit": 1001},
            {"limit": "ten"},
            {"limit": "2.5"},
            {"page": -1},
            {"page": "x"},
            {"limit": "nan"},
            {"limit": "inf"},
        ):
            r = c.get(f"/v1/projects/{dgemu.project_id}/requests", params=bad)
            assert r.status_code == 400, bad
            assert r.json()["err_code"] == "INVALID_QUERY_PARAMETER"


def test_filters(dgemu, seeded) -> None:
    def expect(pred) -> list[str]:
        return [it["request_id"] for it in reversed(seeded) if pred(it)]

    assert ids(dgemu, accessor="key-a") == expect(lambda it: it["api_key_id"] == "key-a")
    assert ids(dgemu, endpoint="speak") == expect(lambda it: it["endpoint"] == "speak")
    assert ids(dgemu, method="streaming") == expect(lambda it: it["method"] == "streaming")
    assert ids(dgemu, status="failed") == expect(lambda it: it.get("code", 200) >= 400)
    assert ids(dgemu, status="succeeded") == expect(lambda it: it.get("code", 200) < 300)
    assert ids(dgemu, deployment="hosted") == expect(lambda it: True)
    assert ids(dgemu, deployment="beta") == []
    assert ids(dgemu, request_id="req-007") == ["req-007"]
    assert ids(dgemu, request_id="req-007", accessor="key-a") == []
    assert ids(dgemu, accessor="key-b", endpoint="listen", method="sync", status="succeeded") == expect(
        lambda it: (
            it["api_key_id"] == "key-b"
            and it["endpoint"] == "listen"
            and it["method"] == "sync"
            and it.get("code", 200) < 300
        )
    )
    assert ids(dgemu, accessor="nobody") == []
    # paging inside a filtered list
    a = ids(dgemu, accessor="key-a")
    got = []
    for p in range(4):
        got += [x["request_id"] for x in listing(dgemu, accessor="key-a", limit=7, page=p)["requests"]]
    assert got == a
    with dgemu.client() as c:
        for bad in ({"endpoint": "nope"}, {"method": "batch"}, {"status": "ok"}, {"deployment": "x"}):
            r = c.get(f"/v1/projects/{dgemu.project_id}/requests", params=bad)
            assert r.status_code == 400 and r.json()["err_code"] == "INVALID_QUERY_PARAMETER"


@pytest.mark.parametrize(
    "start,end,first,last",
    [
        # datetimes, inclusive on both ends
        ("2026-10-05T12:10:00Z", "2026-10-05T12:20:00Z", 10, 20),
        ("2026-10-05T12:10:00", "2026-10-05T12:20:00", 10, 20),
        ("2026-10-05T14:10:00+02:00", "2026-10-05T14:20:00+02:00", 10, 20),
        ("2026-10-05T07:10:00-05:00", "2026-10-05T07:20:00-05:00", 10, 20),
        ("2026-10-05T12:10:00.000000Z", "2026-10-05T12:20:00.000001Z", 10, 20),
        ("2026-10-05T12:09:59.999999Z", "2026-10-05T12:19:59.999Z", 10, 19),
        ("2026-10-05T12:10:00.5Z", "2026-10-05T12:20:00.000000+00:00", 11, 20),
        # dates: start = the day's first instant, end = the whole day
        ("2026-10-05", "2026-10-05", 0, 44),
        ("2026-10-06", "2026-10-07", None, None),
        ("2026-10-01", "2026-10-04", None, None),
    ],
)
def test_start_end_forms(dgemu, seeded, start, end, first, last) -> None:
    got = ids(dgemu, start=start, end=end)
    if first is None:
        assert got == []
    else:
        assert got == [f"req-{i:03d}" for i in range(last, first - 1, -1)]


def test_open_ended_ranges_and_bad_dates(dgemu, seeded) -> None:
    assert ids(dgemu, start="2026-10-05T12:40:00Z") == [f"req-{i:03d}" for i in range(44, 39, -1)]
    assert ids(dgemu, end="2026-10-05T12:02:00Z") == ["req-002", "req-001", "req-000"]
    with dgemu.client() as c:
        for bad in (
            {"start": "yesterday"},
            {"end": "2026-13-01"},
            {"start": "2026-10-05T25:00:00Z"},
            {"start": "2026-10-06", "end": "2026-10-05"},
        ):
            r = c.get(f"/v1/projects/{dgemu.project_id}/requests", params=bad)
            assert r.status_code == 400 and r.json()["err_code"] == "INVALID_QUERY_PARAMETER", bad


def test_unencoded_plus_offset_is_accepted(dgemu, seeded) -> None:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/requests?start=2026-10-05T14:40:00+02:00&limit=100")
    assert r.status_code == 200
    assert [x["request_id"] for x in r.json()["requests"]][-1] == "req-040"


def test_get_request(dgemu, seeded) -> None:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/requests/req-003")
        assert r.status_code == 200
        rec = r.json()["request"]
        assert rec["request_id"] == "req-003" and rec["project_uuid"] == dgemu.project_id
        assert rec["created"] == "2026-10-05T12:03:00.000000Z" and rec["deployment"] == "hosted"
        assert rec["response"]["details"]["characters"] == 100
        r = c.get(f"/v1/projects/{dgemu.project_id}/requests/nope")
        assert r.status_code == 404 and set(r.json()) == {"err_code", "err_msg", "request_id"}


def test_batches_injected_out_of_order_are_listed_in_order(dgemu) -> None:
    """Injections that interleave in time (late records, overlapping batches) are merged into every
    sorted list at once: each listing and each filtered listing is newest first, nothing skipped."""
    import random

    rng = random.Random(7)
    minutes = list(range(300))
    rng.shuffle(minutes)
    batches = [minutes[i : i + 37] for i in range(0, 300, 37)]
    for batch in batches:
        inject(
            dgemu,
            [
                {
                    "request_id": f"ooo-{m:03d}",
                    "api_key_id": "key-a" if m % 3 else "key-b",
                    "created": iso(BASE + timedelta(minutes=m)),
                    "endpoint": "listen",
                    "method": "sync" if m % 2 else "streaming",
                    "model": "nova-3",
                    "duration_seconds": 30,
                }
                for m in batch
            ],
        )
    assert ids(dgemu) == [f"ooo-{m:03d}" for m in range(299, -1, -1)]
    assert ids(dgemu, accessor="key-b") == [f"ooo-{m:03d}" for m in range(297, -1, -3)]
    assert ids(dgemu, method="sync") == [f"ooo-{m:03d}" for m in range(299, -1, -2)]
    page2 = [x["request_id"] for x in listing(dgemu, limit=50, page=2)["requests"]]
    assert page2 == [f"ooo-{m:03d}" for m in range(199, 149, -1)]
