"""Benchmark of ``keyledger sync`` against dgemu, on SQLite.

    python bench/sync.py                 # 1M records
    BENCH_QUICK=1 python bench/sync.py   # 50k records
    BENCH_N=200000 BENCH_RUNS=3 python bench/sync.py   # any size; 3 full syncs (min/median reported)

Starts its own dgemu, bulk-injects N records over the last 60 days (40 keys, 30 of them customers'),
then measures, each sync being a real ``keyledger sync --json`` subprocess on a fresh SQLite database:

- ``full_sync_rate``: records/s of the first sync (the median of ``BENCH_RUNS`` full syncs, each on a
  fresh database; ``min_seconds``/``runs`` list them all); baseline: a bare loop that fetches the same
  dgemu pages (``json.loads(parse_float=Decimal)``) and ``executemany``-s the same fields into an
  unindexed table, run before the first and after every sync (the machine is shared: the ratio is the
  median sync time over the median bare time);
- ``incremental_sync_time_fraction``: a sync after +1 % new records, as a fraction of the full sync time
  (look-back 1 h here; ``incremental_sync_default_lookback_fraction`` with the default 3-day look-back);
- ``api_calls_full_sync``: management API calls of the full sync vs the bound ceil(N/1000) + windows;
- ``peak_rss_full_sync``: the sync process's peak resident memory (ru_maxrss);
- ``dgemu_page_latency``: median time dgemu takes to serve one page of 1000 (the floor for any sync).

Prints one JSON object per line: ``{"bench": "sync", "metric", "value", "unit", "baseline", "ratio"}``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx

import _common

PROJECT_ID = "c0ffee00-0000-4000-8000-0000000000bf"
OWNER_KEY = "dgemu_owner_bench_sync_" + "0" * 17
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_N") or (50_000 if QUICK else 1_000_000))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "1")))
DAYS = 60
KEYS = 40
CUSTOMER_KEYS = 30
BATCH = 10_000
KEY_ENV = "BENCH_DG_KEY"


def emit(
    metric: str,
    value: float,
    unit: str,
    baseline: float | None = None,  # float-ok: timings
    ratio: float | None = None,
    **extra,
) -> None:  # float-ok: timings
    _common.emit("sync", metric, value, unit, baseline, ratio, **extra)


def start_dgemu() -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkstemp(prefix="dgemu-bench-sync-", suffix=".log")[1])
    proc, base = _common.start_dgemu(PROJECT_ID, OWNER_KEY, log)
    return proc, base, log


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_record(rng: random.Random, key: str, created: dt.datetime) -> dict:
    kind = rng.random()
    base = {
        "api_key_id": key,
        "created": iso(created),
        "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
    }
    if kind < 0.55:
        return {
            **base,
            "endpoint": "listen",
            "method": "sync",
            "model": "nova-3",
            "duration_seconds": rng.randint(1, 600),
        }
    if kind < 0.85:
        return {
            **base,
            "endpoint": "listen",
            "method": "streaming",
            "model": "nova-3-medical",
            "duration_seconds": rng.randint(1, 900),
        }
    if kind < 0.95:
        return {
            **base,
            "endpoint": "speak",
            "method": "sync",
            "model": "aura-2-thalia-en",
            "characters": rng.randint(10, 2000),
        }
    return {
        **base,
        "endpoint": "read",
        "method": "sync",
        "model": "read",
        "tokens_in": rng.randint(10, 5000),
        "tokens_out": rng.randint(10, 500),
    }


def inject(client: httpx.Client, records: list[dict]) -> None:
    for i in range(0, len(records), BATCH):
        body = json.dumps({"requests": records[i : i + BATCH]}).encode()
        r = client.post(
            f"/_emulator/projects/{PROJECT_ID}/requests",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        r.raise_for_status()


def setup_db(path: Path, base: str, keys: list[str]) -> str:
    from keyledger.db.engine import make_engine
    from keyledger.db.migrate import upgrade
    from keyledger.db.tables_customers import connections, customers
    from keyledger.db.tables_customers import keys as keys_table

    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            connections.insert().values(
                id="con_bench",
                name="bench",
                kind="managed",
                project_id=PROJECT_ID,
                base_url=base,
                api_key_env=KEY_ENV,
                status="active",
                created_at=t0,
            )
        )
        for i, k in enumerate(keys[:CUSTOMER_KEYS]):
            conn.execute(
                customers.insert().values(
                    id=f"cus_{i}", external_id=f"ext-{i}", name=f"c{i}", created_at=t0, updated_at=t0
                )
            )
            conn.execute(
                keys_table.insert().values(
                    id=f"key_{i}",
                    customer_id=f"cus_{i}",
                    connection_id="con_bench",
                    api_key_id=k,
                    scopes=[],
                    tags=[],
                    operation_id=f"op-{i}",
                    status="active",
                    created_at=t0,
                )
            )
    engine.dispose()
    return url


def run_sync(url: str, tmp: Path, **env_extra: str) -> tuple[float, dict, int]:  # float-ok: seconds
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update(
        {
            "KEYLEDGER_DATABASE_URL": url,
            "KEYLEDGER_CONFIG": str(tmp / "absent.toml"),
            KEY_ENV: OWNER_KEY,
            **env_extra,
        }
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyledger", "sync", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"keyledger sync failed: {err}")
    # The largest peak among reaped children: the first sync is the first child reaped.
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, json.loads(out)["runs"][0], rss


def bare_baseline(base: str, path: Path, start: dt.datetime, end: dt.datetime) -> tuple[float, int, list]:
    """Fetch + parse the same pages and executemany the same fields into a bare table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE bare (request_id TEXT, api_key_id TEXT, created TEXT, path TEXT, method TEXT, "
        "model TEXT, usd TEXT, total_audio TEXT, characters INTEGER, tokens INTEGER)"
    )
    client = httpx.Client(base_url=base, headers={"Authorization": f"Token {OWNER_KEY}"}, timeout=300)
    t0 = time.perf_counter()
    page, rows_total, latencies = 0, 0, []
    rows: list[tuple] = []
    while True:
        t1 = time.perf_counter()
        r = client.get(
            f"/v1/projects/{PROJECT_ID}/requests",
            params={"start": iso(start), "end": iso(end), "limit": 1000, "page": page},
        )
        r.raise_for_status()
        content = r.content
        latencies.append(time.perf_counter() - t1)
        items = json.loads(content, parse_float=Decimal)["requests"]
        for x in items:
            d = x["response"]["details"]
            rows.append(
                (
                    x["request_id"],
                    x["api_key_id"],
                    x["created"],
                    x["path"],
                    d.get("method"),
                    d["models"][0],
                    str(d["usd"]),
                    str(d.get("total_audio")),
                    d.get("characters"),
                    (d.get("tokens_in") or 0) + (d.get("tokens_out") or 0),
                )
            )
        if len(rows) >= 20_000 or len(items) < 1000:
            db.execute("BEGIN")
            db.executemany("INSERT INTO bare VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
            rows_total += len(rows)
            rows = []
        if len(items) < 1000:
            break
        page += 1
    elapsed = time.perf_counter() - t0
    client.close()
    db.close()
    return elapsed, rows_total, latencies


def main() -> None:
    proc, base, log = start_dgemu()
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-sync-"))
    try:
        rng = random.Random(1234)
        client = httpx.Client(base_url=base, headers={"Authorization": f"Token {OWNER_KEY}"}, timeout=600)
        keys = [f"bench-key-{i:03d}" for i in range(KEYS)]
        now = dt.datetime.now(dt.UTC)
        oldest = now - dt.timedelta(days=DAYS)
        newest = now - dt.timedelta(hours=1)
        span = (newest - oldest).total_seconds()
        t_inj = time.perf_counter()
        for i in range(0, N, 100_000):
            chunk = [
                make_record(rng, rng.choice(keys), oldest + dt.timedelta(seconds=rng.random() * span))
                for _ in range(min(100_000, N - i))
            ]
            inject(client, chunk)
        emit("bulk_inject_rate", N / (time.perf_counter() - t_inj), "records/s")

        lo, hi = oldest - dt.timedelta(minutes=1), newest + dt.timedelta(minutes=1)
        # The machine may be shared: the bare baseline runs before the first sync and after every sync.
        bare_times, latencies = [], []
        sync_times: list[float] = []  # float-ok: seconds
        bare_time, bare_rows, lat = bare_baseline(base, tmp / "bare0.db", lo, hi)
        bare_times.append(bare_time)
        latencies += lat
        assert bare_rows == N, bare_rows
        for run in range(RUNS):
            db = tmp / f"kl{run}.db"
            run_url = setup_db(db, base, keys)
            full_time, full, rss_kb = run_sync(run_url, tmp)
            assert full["inserted"] == N, full
            sync_times.append(full_time)
            if run == 0:
                url, first = run_url, full
            else:
                for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                    p.unlink(missing_ok=True)
            bare_time, bare_rows, lat = bare_baseline(base, tmp / f"bare{run + 1}.db", lo, hi)
            assert bare_rows == N, bare_rows
            bare_times.append(bare_time)
            latencies += lat
        full = first
        full_time = statistics.median(sync_times)
        emit(
            "dgemu_page_latency",
            statistics.median(latencies) * 1000,
            "ms/page of 1000",
            pages=len(lat),
        )
        emit(
            "full_sync_rate",
            N / full_time,
            "records/s",
            baseline=N / statistics.median(bare_times),
            target=">= 50000 records/s and ratio >= 0.5 (within 2x of bare)",
            records=N,
            seconds=round(full_time, 2),
            max_rate=round(N / min(sync_times)),
            runs=[round(t, 2) for t in sync_times],
            bare_seconds=[round(t, 2) for t in bare_times],
        )
        bound = math.ceil(N / 1000) + full["windows"]
        emit(
            "api_calls_full_sync",
            full["api_calls"],
            "calls",
            baseline=bound,
            note="baseline = ceil(N/1000) + windows; the sync also reads billing/fields once",
            windows=full["windows"],
        )
        emit("peak_rss_full_sync", rss_kb / 1024, "MB", baseline=250, note="ru_maxrss of the sync process")

        # +1 % new records in the last hour (after the full sync's data), then an incremental sync.
        new_n = N // 100
        recent_lo = now - dt.timedelta(minutes=50)
        fresh = [
            make_record(rng, rng.choice(keys), recent_lo + dt.timedelta(seconds=rng.random() * 2400))
            for _ in range(new_n)
        ]
        inject(client, fresh)
        inc_time, inc, _ = run_sync(url, tmp, KEYLEDGER_SYNC_LOOKBACK_SECONDS="3600")
        assert inc["inserted"] == new_n, inc
        emit(
            "incremental_sync_time_fraction",
            inc_time / full_time,
            "fraction of full sync",
            ratio=None,
            target="<= 0.05",
            seconds=round(inc_time, 2),
            fetched=inc["fetched"],
            inserted=inc["inserted"],
            api_calls=inc["api_calls"],
            lookback_seconds=3600,
        )
        inject(
            client,
            [
                make_record(rng, rng.choice(keys), recent_lo + dt.timedelta(seconds=rng.random() * 2400))
                for _ in range(new_n)
            ],
        )
        inc2_time, inc2, _ = run_sync(url, tmp)
        emit(
            "incremental_sync_default_lookback_fraction",
            inc2_time / full_time,
            "fraction of full sync",
            seconds=round(inc2_time, 2),
            fetched=inc2["fetched"],
            inserted=inc2["inserted"],
            lookback_seconds=3 * 86400,
        )
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.unlink(missing_ok=True)
        for p in sorted(tmp.glob("*"), reverse=True):
            p.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
