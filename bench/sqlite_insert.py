"""The floor under ``bench/sync.py``: SQLite inserting ledger rows with no fetching or parsing at all.

    python bench/sqlite_insert.py                    # 1M rows, 20k and 50k rows per commit
    BENCH_QUICK=1 python bench/sqlite_insert.py      # 100k rows

A fresh database with the real schema (``keyledger.db.migrate.upgrade``) and the sync's pragmas (WAL,
synchronous=NORMAL, the sync's page cache and checkpoint size); rows built beforehand as the sync builds
them (random request ids, newest first, storage formats), sorted by request_id per commit, and
``executemany``-d with the sync's ``INSERT … ON CONFLICT DO NOTHING``. Only the inserts and commits are
timed. ``insert_rate`` per chunk size; baseline: the same rows into the same table without its three
indexes — what the indexes cost.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import _common
from keyledger.db.engine import make_engine
from keyledger.db.migrate import upgrade
from keyledger.usage.store import SQLITE_CACHE_KIB, SQLITE_WAL_CHECKPOINT_PAGES

QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_N") or (100_000 if QUICK else 1_000_000))
COLUMNS = (
    "connection_id, request_id, api_key_id, customer_id, key_id, created, day, endpoint, method, model, "
    "line_item, unit, quantity, cost_usd, code, tags, synced_at, batch"
)
INSERT = (
    f"INSERT INTO usage_records ({COLUMNS}) VALUES ({', '.join('?' * 18)}) "
    "ON CONFLICT (connection_id, request_id) DO NOTHING"
)
INDEXES = ("ix_usage_records_conn_created", "ix_usage_records_customer_day")


def rows(chunk_no: int, size: int, rng: random.Random) -> list[tuple]:
    newest = dt.datetime(2026, 11, 26)
    out = []
    for j in range(chunk_no * size, (chunk_no + 1) * size):
        created = (newest - dt.timedelta(seconds=60 * 86400 * j / N + rng.random())).isoformat(
            " ", "microseconds"
        )
        k = rng.randrange(40)
        customer = (f"cus_{k}", f"key_{k}") if k < 30 else (None, None)
        out.append(
            (
                "con_bench",
                str(uuid.UUID(int=rng.getrandbits(128))),
                f"bench-key-{k:03d}",
                *customer,
                created,
                created[:10],
                "listen",
                "sync",
                "nova-3",
                "sync::nova-3",
                "minute",
                rng.randrange(10**12),
                rng.randrange(10**9),
                200,
                None,
                "2026-11-27 00:00:00.000000",
                f"run.{chunk_no}",
            )
        )
    out.sort(key=lambda r: r[1])
    return out


def run(chunk: int, indexed: bool) -> float:  # float-ok: seconds
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-insert-"))
    path = tmp / "ledger.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        f"cache_size=-{SQLITE_CACHE_KIB}",
        f"wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}",
    ):
        db.execute(f"PRAGMA {pragma}")
    if not indexed:
        for name in INDEXES:
            db.execute(f"DROP INDEX {name}")
        # the unique constraint's index cannot be dropped: the bare table is a copy without it
        db.execute("CREATE TABLE bare AS SELECT * FROM usage_records WHERE 0")
    sql = INSERT if indexed else INSERT.replace("usage_records", "bare").split(" ON CONFLICT")[0]
    rng = random.Random(1)
    seconds = 0.0  # float-ok: seconds
    for chunk_no in range(N // chunk):
        batch = rows(chunk_no, chunk, rng)
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(sql, batch)
        db.execute("COMMIT")
        seconds += time.perf_counter() - t0
    db.close()
    for p in sorted(tmp.glob("*")):
        p.unlink()
    tmp.rmdir()
    return seconds


def main() -> None:
    for chunk in (20_000, 50_000):
        bare = run(chunk, indexed=False)
        indexed = run(chunk, indexed=True)
        _common.emit(
            "sqlite_insert",
            "insert_rate",
            N / indexed,
            "rows/s",
            baseline=N / bare,
            rows=N,
            rows_per_commit=chunk,
            note="the ledger's three indexes vs none; the floor under bench/sync.py's full_sync_rate",
        )


if __name__ == "__main__":
    main()
