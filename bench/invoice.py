"""Benchmark: a month's invoice run for every customer vs one SQL GROUP BY over the same usage.

    python bench/invoice.py                   # 10k customers, 1M usage records
    BENCH_QUICK=1 python bench/invoice.py     # 1k customers, 100k usage records

A fresh SQLite database in a temp dir (schema by ``keyledger.db.migrate.upgrade``), the shipped plans
(``src/keyledger/demo/plans/``, imported with ``pricing.service.import_plan_file``) spread over the
customers, one managed connection, a key per customer, and ``usage_records`` + ``usage_daily`` rows for one
month written with the driver's ``executemany`` (amounts as :func:`to_sqlite_units`, exact). Generation runs
in a child process and is not timed, so the parent's peak RSS is the run's.

Metrics (one JSON object per line: ``{"bench": "invoice", "metric", "value", "unit", "baseline", "ratio"}``):

- ``run_seconds``: ``InvoiceService.from_settings(engine, clock, settings).run(PERIOD)`` (a draft for every
  customer, a FrozenClock after the period); baseline: ``SELECT customer_id, line_item, sum(quantity),
  sum(cost_usd) … GROUP BY customer_id, line_item`` over the same records (best of 3). Target ratio ≤ 2.
- ``run_per_customer_ms``: the same, per customer.
- ``run_peak_rss_mb``: growth of the process's resident set during the run (peak sampled every 20 ms);
  ``run_peak_rss_mb_per_10k_customers`` scales it (target: bounded, not proportional to records).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("BENCH_QUICK") == "1"
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", 1_000 if QUICK else 10_000))
RECORDS = int(os.environ.get("BENCH_RECORDS", 100_000 if QUICK else 1_000_000))
PERIOD = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)  # after the period
CONNECTION = "con_bench"
PLANS = ("at-cost", "growth", "standard")
# line item, ledger unit, USD per unit (Deepgram-like), quantity range (in 1/100 of the unit)
ITEMS = (
    ("streaming::nova-3", "minute", Decimal("0.0077"), (10, 3000)),
    ("streaming::nova-2", "minute", Decimal("0.0058"), (10, 3000)),
    ("sync::nova-3", "minute", Decimal("0.0043"), (10, 6000)),
    ("async::nova-3", "minute", Decimal("0.0043"), (10, 6000)),
    ("sync::aura-2", "character", Decimal("0.00003"), (10_000, 500_000)),
)
CENT = Decimal("0.01")


def emit(metric: str, value, unit: str, baseline=None, **extra) -> None:
    line = {
        "bench": "invoice",
        "metric": metric,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4) if baseline is not None else None,
        "ratio": round(value / baseline, 4) if baseline else None,
        **extra,
    }
    print(json.dumps(line), flush=True)


def peak_rss_mb() -> float:  # float-ok: a measurement, not money
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def rss_mb() -> float:  # float-ok: a measurement, not money
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class RssSampler(threading.Thread):
    """The process's peak resident set while running (sampled every 20 ms): ru_maxrss cannot be reset."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_mb = rss_mb()
        self.peak_mb = self.start_mb
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def stop(self) -> float:  # float-ok
        self.done.set()
        self.join()
        self.peak_mb = max(self.peak_mb, rss_mb())
        return self.peak_mb - self.start_mb


def _dt(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (as usage.store writes it).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# --------------------------------------------------------------------------- data (child process)


def generate(db_path: Path) -> None:
    from sqlalchemy import insert

    from keyledger.core.clock import FrozenClock
    from keyledger.db.engine import make_engine
    from keyledger.db.metadata import to_sqlite_units
    from keyledger.db.migrate import upgrade
    from keyledger.db.tables_customers import connections, customers, keys
    from keyledger.pricing.service import import_plan_file

    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    for f in sorted((ROOT / "src/keyledger/demo/plans").iterdir()):
        import_plan_file(engine, f, clock=clock, actor="bench")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [f"cus_bench{i:06d}" for i in range(CUSTOMERS)]
    with engine.begin() as db:
        db.execute(
            insert(connections).values(
                id=CONNECTION, name="main", kind="managed", project_id="p", base_url="http://127.0.0.1:9",
                api_key_env="DEEPGRAM_API_KEY", status="active", created_at=t0,
            )
        )
        db.execute(
            insert(customers),
            [
                {"id": cid, "external_id": f"c{i:06d}", "name": f"Customer {i}", "email": None,
                 "plan": PLANS[i % len(PLANS)], "currency": "USD", "timezone": "UTC", "status": "active",
                 "billing_mode": "managed", "created_at": t0, "updated_at": t0}
                for i, cid in enumerate(ids)
            ],
        )
        db.execute(
            insert(keys),
            [
                {"id": f"key_bench{i:06d}", "customer_id": cid, "connection_id": CONNECTION,
                 "api_key_id": f"acc-{i:06d}", "secret_ciphertext": None, "comment": None,
                 "scopes": ["usage"], "tags": [], "operation_id": f"op-bench-{i:06d}",
                 "status": "active", "created_at": t0}
                for i, cid in enumerate(ids)
            ],
        )
    engine.dispose()

    rnd = random.Random(4)
    seconds = int((END - START).total_seconds())
    synced = _dt(NOW)
    cols = ("connection_id", "request_id", "api_key_id", "customer_id", "key_id", "created", "day",
            "endpoint", "method", "model", "line_item", "unit", "quantity", "cost_usd", "code", "tags",
            "synced_at", "batch")
    sql = f"INSERT INTO usage_records ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
    daily: dict[tuple[str, str, str, str], list] = defaultdict(lambda: [None, None, 0, 0, 0])
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    chunk = 50_000
    for base in range(0, RECORDS, chunk):
        rows = []
        for n in range(base, min(base + chunk, RECORDS)):
            i = rnd.randrange(CUSTOMERS)
            item, unit, usd, (qlo, qhi) = ITEMS[rnd.randrange(len(ITEMS))]
            quantity = Decimal(rnd.randint(qlo, qhi)) * CENT
            if unit == "character":
                quantity = quantity.to_integral_value()
            cost = (quantity * usd).quantize(Decimal("0.000001"))
            created = START + timedelta(seconds=rnd.randrange(seconds), microseconds=rnd.randrange(10**6))
            ts = _dt(created)
            method, _, model = item.partition("::")
            q_units, c_units = to_sqlite_units(quantity), to_sqlite_units(cost)
            accessor = f"acc-{i:06d}"
            rows.append((CONNECTION, f"req-{n:08d}", accessor, ids[i], f"key_bench{i:06d}", ts, ts[:10],
                         "speak" if unit == "character" else "listen", method, model, item, unit,
                         q_units, c_units, 200, None, synced, "bench"))
            d = daily[(accessor, ts[:10], item, ids[i])]
            d[0], d[1] = unit, item
            d[2] += q_units
            d[3] += c_units
            d[4] += 1
        with con:
            con.executemany(sql, rows)
    with con:
        con.executemany(
            "INSERT INTO usage_daily (connection_id, api_key_id, day, line_item, customer_id, unit, quantity,"
            " cost_usd, requests) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(CONNECTION, acc, day, item, cid, v[0], v[2], v[3], v[4])
             for (acc, day, item, cid), v in daily.items()],
        )
    con.execute("ANALYZE")
    con.close()


# --------------------------------------------------------------------------- timed part (parent)

BASELINE_SQL = (
    "SELECT customer_id, line_item, sum(quantity), sum(cost_usd) FROM usage_records "
    "WHERE day >= ? AND day <= ? AND created >= ? AND created < ? "
    "GROUP BY customer_id, line_item"
)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--generate":
        generate(Path(sys.argv[2]))
        return
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-invoice-"))
    db_path = tmp / "kl.db"
    g0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--generate", str(db_path)], check=True)
    gen_s = time.perf_counter() - g0

    from keyledger.core.clock import FrozenClock
    from keyledger.core.config import Settings
    from keyledger.db.engine import make_engine
    from keyledger.invoices.service import InvoiceService

    engine = make_engine(f"sqlite:///{db_path}")
    args = (START.date().isoformat(), (END.date() - timedelta(days=1)).isoformat(), _dt(START), _dt(END))
    base_times, groups = [], 0
    with engine.connect() as conn:
        for _ in range(3):
            b0 = time.perf_counter()
            groups = len(conn.exec_driver_sql(BASELINE_SQL, args).fetchall())
            base_times.append(time.perf_counter() - b0)
    baseline = min(base_times)

    clock = FrozenClock(NOW)
    settings = Settings(database_url=f"sqlite:///{db_path}")
    service = InvoiceService.from_settings(engine, clock, settings, actor="bench")
    sampler = RssSampler()
    sampler.start()
    r0 = time.perf_counter()
    report = service.run(PERIOD)
    run_s = time.perf_counter() - r0
    rss = sampler.stop()

    outcomes: dict[str, int] = defaultdict(int)
    for e in report.entries:
        outcomes[e.outcome] += 1
    with engine.connect() as conn:
        claimed = conn.exec_driver_sql("SELECT count(*) FROM invoice_usage").scalar_one()
        in_period = conn.exec_driver_sql(
            "SELECT count(*) FROM usage_records WHERE created >= ? AND created < ?", args[2:]
        ).scalar_one()
    engine.dispose()
    size = {"customers": CUSTOMERS, "records": RECORDS}
    emit("run_seconds", run_s, "s", baseline, groups=groups, outcomes=dict(outcomes),
         claimed=claimed, records_in_period=in_period, generate_seconds=round(gen_s, 1), **size)
    emit("run_per_customer_ms", run_s * 1000 / CUSTOMERS, "ms", baseline * 1000 / CUSTOMERS, **size)
    emit("run_peak_rss_mb", rss, "MB", start_mb=round(sampler.start_mb, 1),
         process_peak_mb=round(peak_rss_mb(), 1), **size)
    emit("run_peak_rss_mb_per_10k_customers", rss * 10_000 / CUSTOMERS, "MB", **size)
    shutil.rmtree(tmp, ignore_errors=True)
    if outcomes.get("created") != CUSTOMERS or claimed != in_period:
        raise SystemExit(f"run incomplete: {dict(outcomes)}, claimed {claimed} of {in_period}")


if __name__ == "__main__":
    main()
