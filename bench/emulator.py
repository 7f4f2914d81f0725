"""Benchmark of dgemu: a filtered page of the request log at 10k and at 1M stored records, and the
bulk-injection rate.

    python bench/emulator.py            # 10k vs 1M records
    BENCH_QUICK=1 python bench/emulator.py   # 10k vs 100k

Starts its own dgemu (``python -m dgemu serve``) on a free port and prints one JSON object per line:
``{"bench": "emulator", "metric", "value", "unit", "baseline", "ratio"}``.

The query is ``GET /v1/projects/{pid}/requests?accessor=X&start=…&end=…&limit=1000&page=3``: a "hot"
key X has a fixed 5,000 records inside the queried window, and the rest of the store is filler spread
over 80 days and 50 keys (X among them), so the page has the same content at both sizes and only the
amount of data around it grows. An indexed store answers in about the same time (target ratio ≤ 1.5);
a scan grows with the store. The same query with ``limit=10&page=300`` is also reported: there finding
the page dominates the time rather than writing 1,000 records of JSON.

The machine is shared, so two dgemu processes hold the two stores (10k and 1M) and the timed calls
alternate between them: load spikes hit both sides alike and the ratio stays meaningful.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

import _common

PROJECT_ID = "c0ffee00-0000-4000-8000-0000000000be"
OWNER_KEY = "dgemu_owner_bench_" + "0" * 22
BATCH = 10_000
HOT = 5_000
KEYS = 50
CALLS = int(os.environ.get("BENCH_CALLS", "31"))
QUICK = os.environ.get("BENCH_QUICK") == "1"
SMALL = 10_000
LARGE = 100_000 if QUICK else 1_000_000
TARGET_RATIO = 1.5


def emit(metric: str, value: float, unit: str, baseline: float | None = None) -> None:
    _common.emit("emulator", metric, value, unit, baseline, digits=3)


def start() -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkstemp(prefix="dgemu-bench-", suffix=".log")[1])
    proc, base = _common.start_dgemu(PROJECT_ID, OWNER_KEY, log)
    return proc, base, log


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Bench:
    """One dgemu process and the store it is filled with."""

    def __init__(self, base: str, now: dt.datetime):
        self.c = httpx.Client(base_url=base, headers={"Authorization": f"Token {OWNER_KEY}"}, timeout=300)
        self.rng = random.Random(42)
        self.now = now
        self.window_start = (now - dt.timedelta(days=10)).replace(hour=0, minute=0, second=0)
        self.window_end = self.window_start + dt.timedelta(hours=23, minutes=59, seconds=59)
        self.keys = [self.create_key(i) for i in range(KEYS)]
        self.hot = self.keys[0]
        self.stored = 0
        self.inject_seconds = 0.0
        self.injected = 0

    def create_key(self, i: int) -> str:
        body = {"comment": f"bench {i}", "scopes": ["usage:write"]}
        r = self.c.post(f"/v1/projects/{PROJECT_ID}/keys", json=body)
        r.raise_for_status()
        return r.json()["api_key_id"]

    def record(self, key: str, created: dt.datetime) -> dict:
        kind = self.rng.random()
        base = {"api_key_id": key, "created": iso(created), "request_id": str(uuid.uuid4())}
        if kind < 0.6:
            return {**base, "endpoint": "listen", "method": "sync", "model": "nova-3",
                    "duration_seconds": self.rng.randint(1, 600)}
        if kind < 0.9:
            return {**base, "endpoint": "listen", "method": "streaming", "model": "nova-3",
                    "duration_seconds": self.rng.randint(1, 900)}
        return {**base, "endpoint": "speak", "method": "sync", "model": "aura-2-thalia-en",
                "characters": self.rng.randint(10, 2000)}

    def post(self, records: list[dict]) -> None:
        body = json.dumps({"requests": records}).encode()
        t0 = time.perf_counter()
        r = self.c.post(f"/_emulator/projects/{PROJECT_ID}/requests", content=body,
                        headers={"Content-Type": "application/json"})
        self.inject_seconds += time.perf_counter() - t0
        r.raise_for_status()
        assert r.json() == {"created": len(records)}, r.text[:300]
        self.injected += len(records)
        self.stored += len(records)

    def hot_records(self) -> None:
        span = (self.window_end - self.window_start).total_seconds()
        records = [self.record(self.hot, self.window_start + dt.timedelta(seconds=self.rng.random() * span))
                   for _ in range(HOT)]
        self.post(records)

    def fill_to(self, total: int) -> None:
        while self.stored < total:
            n = min(BATCH, total - self.stored)
            records = []
            for _ in range(n):
                created = self.now - dt.timedelta(seconds=self.rng.random() * 80 * 86400)
                records.append(self.record(self.rng.choice(self.keys), created))
            self.post(records)

    def page_call(self, limit: int, page: int) -> float:
        params = {"accessor": self.hot, "start": iso(self.window_start), "end": iso(self.window_end),
                  "limit": limit, "page": page}
        t0 = time.perf_counter()
        r = self.c.get(f"/v1/projects/{PROJECT_ID}/requests", params=params)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        got = r.json()["requests"]
        assert len(got) == limit, f"page {page} should be full, got {len(got)}"
        assert all(x["api_key_id"] == self.hot for x in got)
        return elapsed


def interleaved(small: Bench, large: Bench, limit: int, page: int) -> tuple[float, float]:
    """Median latency (ms) of the same page on both stores, calls alternating; one warm-up call each."""
    small.page_call(limit, page)
    large.page_call(limit, page)
    a, b = [], []
    for i in range(CALLS):
        first, second = (small, large) if i % 2 == 0 else (large, small)
        t1, t2 = first.page_call(limit, page), second.page_call(limit, page)
        a.append(t1 if first is small else t2)
        b.append(t2 if first is small else t1)
    return statistics.median(a) * 1000, statistics.median(b) * 1000


def stop(proc: subprocess.Popen, log: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.unlink(missing_ok=True)


def main() -> None:
    servers = [start(), start()]
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        small, large = Bench(servers[0][1], now), Bench(servers[1][1], now)
        for b in (small, large):
            b.hot_records()
        small.fill_to(SMALL)
        large.fill_to(LARGE)
        label = f"{LARGE // 1_000_000}m" if LARGE >= 1_000_000 else f"{LARGE // 1000}k"
        s_ms, l_ms = interleaved(small, large, 1000, 3)
        emit(f"requests_page_latency_{SMALL // 1000}k", s_ms, "ms")
        emit(f"requests_page_latency_{label}", l_ms, "ms", baseline=s_ms)
        # limit=10&page=300 (records 3000-3009): the same lookup with little JSON to write, so the
        # figure is dominated by finding the page, not by serializing it
        s10, l10 = interleaved(small, large, 10, 300)
        emit(f"requests_page10_latency_{label}", l10, "ms", baseline=s10)
        emit("bulk_inject_rate", large.injected / large.inject_seconds, "records/s")
        if l_ms / s_ms > TARGET_RATIO:
            print(f"# ratio {l_ms / s_ms:.2f} exceeds the target {TARGET_RATIO}", file=sys.stderr)
    finally:
        for proc, _, log in servers:
            stop(proc, log)


if __name__ == "__main__":
    main()
