"""Benchmark: a month's invoice run for every customer vs one SQL GROUP BY over the same usage.

    python bench/invoice.py                   # 10k customers, 1M usage records
    BENCH_QUICK=1 python bench/invoice.py     # 1k customers, 100k usage records
    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres python bench/invoice.py

A fresh SQLite database in a temp dir (or, with ``BENCH_DATABASE_URL`` naming a PostgreSQL server, a fresh
database ``kl_bench_invoice_<pid>`` created on it and dropped afterwards; records are loaded with
``COPY``) (schema by ``keyledger.db.migrate.upgrade``), the shipped plans
(``src/keyledger/demo/plans/``, imported with ``pricing.service.import_plan_file``) spread over the
customers, one managed connection, a key per customer, and ``usage_records`` + ``usage_daily`` rows for one
month written with the driver's ``executemany`` (amounts as :func:`to_sqlite_units`, exact). Generation runs
in a child process and is not timed, so the parent's peak RSS is the run's.

Metrics (one JSON object per line: ``{"bench": "invoice", "metric", "value", "unit", "baseline", "ratio"}``):

- ``run_seconds``: ``InvoiceService.from_settings(engine, clock, settings).run(PERIOD)`` (a draft for every
  customer, a FrozenClock after the period); baseline: ``SELECT customer_id, line_item, sum(quantity),
  sum(cost_usd) … GROUP BY customer_id, line_item`` over the same records (best of 3). Target ratio ≤ 2.
- ``run_cpu_seconds`` (SQLite only, where the database runs in-process): the same in process CPU time, which
  a busy shared host disturbs less than wall time.
- ``run_per_customer_ms``: the same, per customer.
- ``run_floor_seconds``: what the database alone needs for the run's reads and writes — the window's GROUP BY
  (under the run's tuning) and the run's own rows (drafts, claims, lines, audit entries, read back from the
  run's database in storage form) written to a copy of the database as it was before the run, in batches
  of 1000 customers (each: lock the customers, PostgreSQL ``COPY`` of pre-formatted text / SQLite
  ``executemany`` of stored values, commit); no pricing and no value formatting at all. Baseline: the GROUP
  BY. It is the lowest ratio any run code can reach on the host: on the 2-core test host, PostgreSQL's
  floor is itself 1.7-3.5x (median 2.6x) its parallel baseline (``docs/invoices.md``).
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("BENCH_QUICK") == "1"
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", 1_000 if QUICK else 10_000))
RECORDS = int(os.environ.get("BENCH_RECORDS", 100_000 if QUICK else 1_000_000))
SERVER_URL = os.environ.get("BENCH_DATABASE_URL")
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


def generate(url: str) -> None:
    from sqlalchemy import insert

    from keyledger.core.clock import FrozenClock
    from keyledger.db.engine import make_engine
    from keyledger.db.metadata import to_sqlite_units
    from keyledger.db.migrate import upgrade
    from keyledger.db.tables_customers import connections, customers, keys
    from keyledger.pricing.service import import_plan_file

    engine = make_engine(url)
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

    rnd = random.Random(4)
    seconds = int((END - START).total_seconds())
    cols = ("connection_id", "request_id", "api_key_id", "customer_id", "key_id", "created", "day",
            "endpoint", "method", "model", "line_item", "unit", "quantity", "cost_usd", "code", "tags",
            "synced_at", "batch")
    daily: dict[tuple[str, str, str, str], list] = defaultdict(lambda: [None, None, 0, 0, 0])

    def records(base: int, stop: int):
        for n in range(base, stop):
            i = rnd.randrange(CUSTOMERS)
            item, unit, usd, (qlo, qhi) = ITEMS[rnd.randrange(len(ITEMS))]
            quantity = Decimal(rnd.randint(qlo, qhi)) * CENT
            if unit == "character":
                quantity = quantity.to_integral_value()
            cost = (quantity * usd).quantize(Decimal("0.000001"))
            created = START + timedelta(seconds=rnd.randrange(seconds), microseconds=rnd.randrange(10**6))
            method, _, model = item.partition("::")
            accessor = f"acc-{i:06d}"
            day = created.date()
            d = daily[(accessor, day.isoformat(), item, ids[i])]
            d[0], d[1] = unit, item
            d[2] += quantity
            d[3] += cost
            d[4] += 1
            yield (CONNECTION, f"req-{n:08d}", accessor, ids[i], f"key_bench{i:06d}", created, day,
                   "speak" if unit == "character" else "listen", method, model, item, unit,
                   quantity, cost, 200, None, NOW, "bench")

    daily_cols = ("connection_id", "api_key_id", "day", "line_item", "customer_id", "unit", "quantity",
                  "cost_usd", "requests")

    def daily_rows():
        return [(CONNECTION, acc, day, item, cid, v[0], v[2], v[3], v[4])
                for (acc, day, item, cid), v in daily.items()]

    chunk = 50_000
    if url.startswith("sqlite"):
        def native(row):  # SQLAlchemy's SQLite storage: datetimes as text, amounts as scaled integers
            row = list(row)
            row[5], row[6], row[16] = _dt(row[5]), row[6].isoformat(), _dt(row[16])
            row[12], row[13] = to_sqlite_units(row[12]), to_sqlite_units(row[13])
            return row

        engine.dispose()
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-262144")
        sql = f"INSERT INTO usage_records ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        for base in range(0, RECORDS, chunk):
            with con:
                con.executemany(sql, [native(r) for r in records(base, min(base + chunk, RECORDS))])
        with con:
            marks = ", ".join("?" for _ in daily_cols)
            con.executemany(
                f"INSERT INTO usage_daily ({', '.join(daily_cols)}) VALUES ({marks})",
                [(*r[:6], to_sqlite_units(r[6]), to_sqlite_units(r[7]), r[8]) for r in daily_rows()],
            )
        con.execute("ANALYZE")
        con.close()
        return
    with engine.begin() as conn:
        cur = conn.connection.driver_connection.cursor()
        with cur.copy(f"COPY usage_records ({', '.join(cols)}) FROM STDIN") as copy:
            for base in range(0, RECORDS, chunk):
                for r in records(base, min(base + chunk, RECORDS)):
                    copy.write_row(r)
        with cur.copy(f"COPY usage_daily ({', '.join(daily_cols)}) FROM STDIN") as copy:
            for r in daily_rows():
                copy.write_row(r)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


# --------------------------------------------------------------------------- timed part (parent)

BASELINE_SQL = (
    "SELECT customer_id, line_item, sum(quantity), sum(cost_usd) FROM usage_records "
    "WHERE day >= :first AND day <= :last AND created >= :lo AND created < :hi "
    "GROUP BY customer_id, line_item"
)


def fresh_database() -> tuple[str, Callable[[], None]]:
    """A new database's URL and how to remove it: SQLite in a temp dir, or on BENCH_DATABASE_URL's server."""
    if SERVER_URL is None:
        tmp = Path(tempfile.mkdtemp(prefix="kl-bench-invoice-"))
        return f"sqlite:///{tmp / 'kl.db'}", lambda: shutil.rmtree(tmp, ignore_errors=True)
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"kl_bench_invoice_{os.getpid()}"
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False), drop


def clone_database(url: str) -> tuple[str, Callable[[], None]]:
    """A copy of the (generated, unused) database at ``url``: the SQLite file, or ``CREATE DATABASE …
    TEMPLATE`` on the server; and how to remove it."""
    if url.startswith("sqlite"):
        src = Path(url.removeprefix("sqlite:///"))
        dst = src.with_name("floor.db")
        shutil.copyfile(src, dst)
        return f"sqlite:///{dst}", lambda: dst.unlink(missing_ok=True)
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}_floor TEMPLATE {name}")

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}_floor WITH (FORCE)")
        admin.dispose()

    return make_url(url).set(database=f"{name}_floor").render_as_string(hide_password=False), drop


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--generate":
        generate(sys.argv[2])
        return
    url, drop = fresh_database()
    try:
        measure(url)
    finally:
        drop()


def results_digest(conn) -> str:
    """sha256 of every draft's totals and lines (by customer, in line order), read through the schema's
    types: the same bills give the same digest on either database, so a faster run can be checked to bill
    exactly the same."""
    import hashlib

    from sqlalchemy import select

    from keyledger.db.tables_customers import customers
    from keyledger.db.tables_invoices import invoice_lines, invoices

    def norm(v):
        return v.normalize() if isinstance(v, Decimal) else v

    h = hashlib.sha256()
    totals = conn.execute(
        select(customers.c.external_id, invoices.c.subtotal, invoices.c.tax, invoices.c.total, invoices.c.id)
        .join(customers, customers.c.id == invoices.c.customer_id)
        .order_by(customers.c.external_id)
    ).fetchall()
    per_invoice: dict = defaultdict(list)
    cols = [invoice_lines.c[n] for n in ("kind", "description", "line_item", "unit", "quantity", "unit_price",
                                         "amount", "provider_cost_usd", "rate")]
    for row in conn.execute(select(invoice_lines.c.invoice_id, *cols).order_by(invoice_lines.c.position)):
        per_invoice[row[0]].append(tuple(norm(v) for v in row[1:]))
    for row in totals:
        h.update(repr(tuple(norm(v) for v in row[:-1])).encode())
        h.update(repr(per_invoice[row[-1]]).encode())
    return h.hexdigest()[:16]


# The run's rows per table, and the column naming the invoice they belong to (batches group them by it).
FLOOR_TABLES = (("invoices", "id"), ("invoice_claims", "invoice_id"), ("invoice_lines", "invoice_id"),
                ("audit_log", "subject"))


def run_floor(run_engine, floor_url: str) -> float:  # float-ok: seconds
    """``run_floor_seconds`` (module docstring): the window's GROUP BY and the run's rows, taken from
    ``run_engine``'s database, written to ``floor_url`` (a copy from before the run)."""
    from sqlalchemy import select

    from keyledger.db.engine import make_engine
    from keyledger.db.tables_customers import customers
    from keyledger.invoices import store

    postgresql = not floor_url.startswith("sqlite")
    batch_of: dict[str, int] = {}
    customers_of: list[list[str]] = []  # per batch of 1000 customers
    rows: dict[str, list[list]] = {}  # per table and batch: COPY text lines (PostgreSQL) / stored values
    columns: dict[str, list[str]] = {}
    with run_engine.connect() as conn:
        driver = conn.connection.driver_connection
        for k, (invoice_id, customer_id) in enumerate(
            conn.exec_driver_sql("SELECT id, customer_id FROM invoices ORDER BY customer_id")
        ):
            if k % 1000 == 0:
                customers_of.append([])
            batch_of[invoice_id] = len(customers_of) - 1
            customers_of[-1].append(customer_id)
        for table, key in FLOOR_TABLES:
            names = list(conn.exec_driver_sql(f"SELECT * FROM {table} WHERE 1 = 0").keys())
            columns[table] = [key] + [n for n in names if n != key]
            rows[table] = per_batch = [[] for _ in customers_of]
            select_sql = f"SELECT {', '.join(columns[table])} FROM {table}"
            if table == "audit_log":
                select_sql += " WHERE action LIKE 'invoice.%'"
            if postgresql:
                with driver.cursor() as cur, cur.copy(f"COPY ({select_sql}) TO STDOUT") as copy:
                    for line in _copy_lines(copy):
                        per_batch[batch_of[line.split(b"\t", 1)[0].decode()]].append(line)
            else:
                for values in driver.execute(select_sql):
                    per_batch[batch_of[values[0]]].append(values)

    engine = make_engine(floor_url)
    with engine.begin() as conn:
        hw = store.high_water(conn)
    with engine.begin() as conn, store.run_tuning(conn):  # warm the cache, as the baseline warmed the run's
        store.window_sums(conn, START, END, hw, set())
    t0 = time.perf_counter()
    with engine.begin() as conn, store.run_tuning(conn):
        store.window_sums(conn, START, END, hw, set())
    for b, batch in enumerate(customers_of):
        with engine.begin() as conn:
            conn.execute(select(customers.c.id).where(customers.c.id.in_(batch)).with_for_update()).all()
            driver = conn.connection.driver_connection
            for table, _key in FLOOR_TABLES:
                names = ", ".join(columns[table])
                if postgresql:
                    with driver.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                        copy.write(b"".join(rows[table][b]))
                else:
                    marks = ", ".join("?" for _ in columns[table])
                    driver.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows[table][b])
    floor_s = time.perf_counter() - t0
    with engine.connect() as conn:
        written = conn.exec_driver_sql("SELECT count(*) FROM invoice_lines").scalar_one()
    engine.dispose()
    if written != sum(map(len, rows["invoice_lines"])):
        raise SystemExit(f"floor incomplete: {written} lines written")
    return floor_s


def _copy_lines(copy):
    """The text lines of a ``COPY … TO STDOUT`` (each ending in a newline)."""
    pending = b""
    for data in copy:
        pending += bytes(data)
        *lines, pending = pending.split(b"\n")
        yield from (line + b"\n" for line in lines)


def measure(url: str) -> None:
    g0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--generate", url], check=True)
    gen_s = time.perf_counter() - g0
    floor_url, drop_floor = clone_database(url)
    try:
        _measure(url, floor_url, gen_s)
    finally:
        drop_floor()


def _measure(url: str, floor_url: str, gen_s: float) -> None:

    from sqlalchemy import text

    from keyledger.core.clock import FrozenClock
    from keyledger.core.config import Settings
    from keyledger.db.engine import make_engine
    from keyledger.invoices.service import InvoiceService

    engine = make_engine(url)
    sqlite = url.startswith("sqlite")
    args = {"first": START.date(), "last": END.date() - timedelta(days=1), "lo": START, "hi": END}
    if sqlite:  # the storage format, as SQLAlchemy's types would bind them
        args = {k: v.isoformat() if k in ("first", "last") else _dt(v) for k, v in args.items()}
    base_times, base_cpu, groups = [], [], 0
    with engine.connect() as conn:
        for _ in range(3):
            b0, c0 = time.perf_counter(), time.process_time()
            groups = len(conn.execute(text(BASELINE_SQL), args).fetchall())
            base_times.append(time.perf_counter() - b0)
            base_cpu.append(time.process_time() - c0)
    baseline = min(base_times)

    clock = FrozenClock(NOW)
    settings = Settings(database_url=url)
    service = InvoiceService.from_settings(engine, clock, settings, actor="bench")
    sampler = RssSampler()
    sampler.start()
    profile_to = os.environ.get("BENCH_PROFILE")  # a path: the run under cProfile, stats written there
    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    r0, c0 = time.perf_counter(), time.process_time()
    report = service.run(PERIOD)
    run_s = time.perf_counter() - r0
    run_cpu = time.process_time() - c0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_to)
    rss = sampler.stop()

    outcomes: dict[str, int] = defaultdict(int)
    for e in report.entries:
        outcomes[e.outcome] += 1
    with engine.connect() as conn:
        claimed = conn.exec_driver_sql("SELECT coalesce(sum(records), 0) FROM invoice_claims").scalar_one()
        in_period = conn.execute(
            text("SELECT count(*) FROM usage_records WHERE created >= :lo AND created < :hi"),
            {"lo": args["lo"], "hi": args["hi"]},
        ).scalar_one()
        digest = results_digest(conn)
    floor_s = run_floor(engine, floor_url)
    engine.dispose()
    size = {"customers": CUSTOMERS, "records": RECORDS, "database": "sqlite" if sqlite else "postgresql"}
    emit("run_seconds", run_s, "s", baseline, groups=groups, outcomes=dict(outcomes),
         claimed=claimed, records_in_period=in_period, generate_seconds=round(gen_s, 1), results=digest,
         **size)
    emit("run_floor_seconds", floor_s, "s", baseline, **size)
    if sqlite:  # the database engine runs in this process: CPU time is steadier than wall time on a busy host
        emit("run_cpu_seconds", run_cpu, "s", min(base_cpu), **size)
    emit("run_per_customer_ms", run_s * 1000 / CUSTOMERS, "ms", baseline * 1000 / CUSTOMERS, **size)
    emit("run_peak_rss_mb", rss, "MB", start_mb=round(sampler.start_mb, 1),
         process_peak_mb=round(peak_rss_mb(), 1), **size)
    emit("run_peak_rss_mb_per_10k_customers", rss * 10_000 / CUSTOMERS, "MB", **size)
    if outcomes.get("created") != CUSTOMERS or claimed != in_period:
        raise SystemExit(f"run incomplete: {dict(outcomes)}, claimed {claimed} of {in_period}")


if __name__ == "__main__":
    main()
