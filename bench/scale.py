"""Scale-out benchmark on PostgreSQL: sync and invoice throughput with 1, 2 and 4 processes.

    python bench/scale.py                                   # 8 connections, 40k records, 800 customers
    BENCH_SCALE_RECORDS=200000 BENCH_SCALE_WORKERS=1,2,4,8 python bench/scale.py

PostgreSQL from ``BENCH_POSTGRES_URL`` (else ``KEYLEDGER_TEST_POSTGRES_URL``, else
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); the script creates its own databases
(``kl_bench_scale_<pid>_<round>_<workers>``) and drops them at the end. One dgemu process hosts one
project per connection (``BENCH_SCALE_CONNECTIONS``, default 8); ``BENCH_SCALE_RECORDS`` records
(default 40k) are spread over them, created in the last two days, ``BENCH_SCALE_CUSTOMERS`` customers
(default 100) per connection each own a key, and a tenth of the traffic comes from keys of no customer.

- ``sync_records_per_s_<k>_workers``: k ``keyledger worker`` processes on a fresh database; they split
  the connections through the worker's job leases (``sync:<connection>`` is claimed by one worker at a
  time). The workers start on inactive connections; timed from the moment every connection is activated
  (all workers running) until the ledger holds every record. An untimed warm-up sync comes first (the
  first sync after start-up was up to six times slower than the next ones).
- ``invoice_customers_per_s_<k>_processes``: k processes each running ``InvoiceService.run(period,
  shard=(i, k))`` — what ``keyledger invoices run --shard i/k`` runs — over the synced ledger
  (``ANALYZE`` first, then a warm-up run, so every timed run rebuilds the same drafts); timed from a
  common start signal once every process has imported and connected, until the last finishes.
  Process start-up (``cli_start_seconds``) is excluded from both: workers are long-running.

Each line is ``{"bench": "scale", "metric", "value", "unit", "baseline", "ratio"}`` with baseline the
1-process figure and ratio the speedup. Rates are the best of ``BENCH_SCALE_ROUNDS`` rounds (default 2;
each round runs every process count in turn, so load from elsewhere hits them alike; every round's
seconds are printed too). ``cli_start_seconds`` (``keyledger --help``) is the fixed cost each process
pays before its first query. Every process (PostgreSQL, dgemu, the workers) shares this machine's cores
(``cpus`` and the 1-minute load average ``load1`` are printed with each line): with 2 cores, 4 workers
cannot be twice as fast as 2. ``BENCH_SCALE_KEEP=1`` keeps the databases.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

import _common

ROOT = Path(__file__).resolve().parents[1]
PG_URL = (os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("KEYLEDGER_TEST_POSTGRES_URL")
          or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CONNECTIONS = int(os.environ.get("BENCH_SCALE_CONNECTIONS", 8))
RECORDS = int(os.environ.get("BENCH_SCALE_RECORDS", 40_000))
CUSTOMERS_PER_CONNECTION = int(os.environ.get("BENCH_SCALE_CUSTOMERS", 100))
WORKERS = [int(k) for k in os.environ.get("BENCH_SCALE_WORKERS", "1,2,4").split(",")]
TIMEOUT = int(os.environ.get("BENCH_SCALE_TIMEOUT", 900))
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", 2))
KEEP = os.environ.get("BENCH_SCALE_KEEP") == "1"  # keep the databases (to look into them)
OWNER_KEY = "dgemu_owner_bench_scale_" + "0" * 16
PROJECT_ID = "c0ffee00-0000-4000-8000-000000005ca1"
NOW = datetime.now(UTC)
PERIOD = NOW.strftime("%Y-%m")
CPUS = os.cpu_count()


def emit(metric: str, value: float, unit: str, baseline: float | None, **extra) -> None:  # float-ok
    _common.emit("scale", metric, value, unit, baseline, None if not baseline else value / baseline,
                 digits=2, cpus=CPUS, load1=round(os.getloadavg()[0], 1), **extra)


def key_env(i: int) -> str:
    return f"BENCH_SCALE_DG_KEY_{i}"


def setup_dgemu(base: str) -> list[tuple[str, str, list[str]]]:
    """One project per connection with its records injected; returns (project id, owner key, customer
    accessors) per connection."""
    rng = random.Random(7)
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Token {OWNER_KEY}"}, timeout=300)
    projects = []
    start = NOW - timedelta(days=2)
    per_connection = RECORDS // CONNECTIONS
    for i in range(CONNECTIONS):
        made = admin.post("/_emulator/projects", json={"name": f"scale-{i}"})
        made.raise_for_status()
        project = made.json()
        accessors = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(CUSTOMERS_PER_CONNECTION)]
        stray = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)]
        records = []
        for _ in range(per_connection):
            created = start + timedelta(seconds=rng.uniform(0, 2 * 86400 - 600))
            records.append({
                "api_key_id": rng.choice(stray) if rng.random() < 0.1 else rng.choice(accessors),
                "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "endpoint": "listen", "method": rng.choice(["sync", "streaming"]), "model": "nova-3",
                "duration_seconds": rng.randint(1, 600),
            })
        for j in range(0, len(records), 10_000):
            r = admin.post(f"/_emulator/projects/{project['project_id']}/requests",
                           json={"requests": records[j:j + 10_000]})
            r.raise_for_status()
        projects.append((project["project_id"], project["owner_key"], accessors))
    admin.close()
    return projects


def create_database(name: str, base: str, projects) -> str:
    from sqlalchemy import create_engine, insert, text

    from keyledger.core.clock import FrozenClock
    from keyledger.db.engine import make_engine, normalize_url
    from keyledger.db.migrate import upgrade
    from keyledger.db.tables_customers import connections, customers, keys
    from keyledger.pricing.service import import_plan_file

    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = normalize_url(PG_URL).rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    import_plan_file(engine, ROOT / "src/keyledger/demo/plans/at-cost.yaml", clock=FrozenClock(t0),
                     actor="bench")
    with engine.begin() as db:
        for i, (project_id, _key, accessors) in enumerate(projects):
            cid = f"con_scale{i}"
            db.execute(insert(connections).values(
                id=cid, name=f"scale-{i}", kind="managed", project_id=project_id, base_url=base,
                api_key_env=key_env(i), status="disconnected", created_at=t0))  # activated at t0
            db.execute(insert(customers), [
                {"id": f"cus_s{i}_{j}", "external_id": f"ext-{i}-{j}", "name": f"Customer {i}-{j}",
                 "plan": "at-cost", "created_at": t0, "updated_at": t0} for j in range(len(accessors))])
            db.execute(insert(keys), [
                {"id": f"key_s{i}_{j}", "customer_id": f"cus_s{i}_{j}", "connection_id": cid,
                 "api_key_id": acc, "scopes": [], "tags": [], "operation_id": f"op-s{i}-{j}",
                 "status": "active", "created_at": t0} for j, acc in enumerate(accessors)])
    engine.dispose()
    return url


def drop_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    from keyledger.db.engine import normalize_url

    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def cli_env(url: str, tmp: Path, projects) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update({
        "KEYLEDGER_DATABASE_URL": url,
        "KEYLEDGER_CONFIG": str(tmp / "absent.toml"),
        "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
        "KEYLEDGER_WORKER_SYNC_INTERVAL_SECONDS": "3600",  # each connection once per measurement
        "KEYLEDGER_PROVIDER_MAX_RETRIES": "2",
        **{key_env(i): key for i, (_p, key, _a) in enumerate(projects)},
    })
    return env


def ledger_count(url: str) -> int:
    from sqlalchemy import func, select

    from keyledger.db.engine import make_engine
    from keyledger.db.tables_usage import usage_records

    engine = make_engine(url)
    try:
        with engine.connect() as db:
            return db.execute(select(func.count()).select_from(usage_records)).scalar_one()
    finally:
        engine.dispose()


def analyze(url: str) -> None:
    """Planner statistics, as autovacuum would have them on a database in steady state (the sync has just
    bulk-loaded every table: without them PostgreSQL plans the invoice claims as if the tables were empty,
    several times slower)."""
    from sqlalchemy import text

    from keyledger.db.engine import make_engine

    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as db:
        db.execute(text("ANALYZE"))
    engine.dispose()


def timed_sync(url: str, env: dict[str, str], workers: int, expected: int, log: Path) -> float:  # float-ok
    """Start the workers on a database whose connections are all inactive, wait until every worker runs
    its loop (start-up is paid once by a long-running worker, not per sync), then activate every
    connection at once: timed from then until the ledger holds every record (workers pick new
    connections up at their next cycle, within a second)."""
    from sqlalchemy import func, select, update

    from keyledger.db.engine import make_engine
    from keyledger.db.tables_customers import connections
    from keyledger.db.tables_usage import usage_records

    engine = make_engine(url)
    out = log.open("a")
    procs = [subprocess.Popen([sys.executable, "-m", "keyledger", "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=out, text=True) for _ in range(workers)]
    try:
        for p in procs:
            if "started" not in (p.stdout.readline() if p.stdout else ""):
                raise SystemExit(f"a worker did not start (log: {log})")
        t0 = time.perf_counter()
        with engine.begin() as db:
            db.execute(update(connections).values(status="active"))
        while True:
            with engine.connect() as db:
                count = db.execute(select(func.count()).select_from(usage_records)).scalar_one()
            if count >= expected:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > TIMEOUT:
                raise SystemExit(f"sync with {workers} workers: {count}/{expected} records after {TIMEOUT} s "
                                 f"(log: {log})")
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker exited early (log: {log})")
            time.sleep(0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        out.close()
        engine.dispose()


def invoice_shard(shard: str) -> None:
    """Child mode (``--invoice-shard I/N``): import and connect, print ``ready``, wait for ``go`` on stdin,
    run ``InvoiceService.run(PERIOD, shard=(I, N))`` (what ``keyledger invoices run --shard I/N`` runs),
    print the number of drafts and failures as JSON."""
    from keyledger.bootstrap import Runtime
    from keyledger.core.config import load_settings
    from keyledger.invoices.service import InvoiceService

    rt = Runtime(settings=load_settings())
    service = InvoiceService.from_settings(rt.engine, rt.clock, rt.settings)
    with rt.engine.connect():
        pass
    index, count = (int(x) for x in shard.split("/"))
    print("ready", flush=True)
    sys.stdin.readline()
    report = service.run(PERIOD, shard=(index, count))
    print(json.dumps({"entries": len(report.entries), "failed": [e.to_dict() for e in report.failed][:3]}),
          flush=True)


def timed_invoices(env: dict[str, str], processes: int, log: Path) -> tuple[float, int]:  # float-ok
    """k shard processes, each started and connected first; timed from ``go`` until the last finishes."""
    out = log.open("a")
    procs = [subprocess.Popen([sys.executable, __file__, "--invoice-shard", f"{i}/{processes}"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, text=True)
             for i in range(processes)]
    for p in procs:
        if (p.stdout.readline() if p.stdout else "").strip() != "ready":
            raise SystemExit(f"an invoice shard did not start (log: {log})")
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    built = 0
    for p in procs:
        stdout, _ = p.communicate(timeout=TIMEOUT)
        if p.returncode != 0:
            raise SystemExit(f"an invoice shard failed (log: {log})")
        result = json.loads(stdout.strip().splitlines()[-1])
        if result["failed"]:
            raise SystemExit(f"invoices run: customers failed, e.g. {result['failed'][0]}")
        built += result["entries"]
    elapsed = time.perf_counter() - t0
    out.close()
    return elapsed, built


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-scale-"))
    log = tmp / "processes.log"
    proc, base = _common.start_dgemu(PROJECT_ID, OWNER_KEY, tmp / "dgemu.log")
    names: list[str] = []
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "keyledger", "--help"], capture_output=True, check=True)
        emit("cli_start_seconds", time.perf_counter() - t0, "s", None)
        projects = setup_dgemu(base)
        expected = (RECORDS // CONNECTIONS) * CONNECTIONS
        customers = CONNECTIONS * CUSTOMERS_PER_CONNECTION
        # Rounds interleave the worker counts, so a burst of load from elsewhere hits each count alike.
        sync_seconds: dict[int, list[float]] = {k: [] for k in WORKERS}  # float-ok: seconds
        # Warm-up (untimed): the first sync after start-up was up to six times slower than the next ones.
        warm = f"kl_bench_scale_{os.getpid()}_warmup"
        names.append(warm)
        url = create_database(warm, base, projects)
        timed_sync(url, cli_env(url, tmp, projects), WORKERS[0], expected, log)
        if not KEEP:
            drop_database(names.pop())
        env: dict[str, str] = {}
        for r in range(ROUNDS):
            for k in WORKERS:
                name = f"kl_bench_scale_{os.getpid()}_{r}_{k}"
                names.append(name)
                url = create_database(name, base, projects)
                env = cli_env(url, tmp, projects)
                sync_seconds[k].append(timed_sync(url, env, k, expected, log))
                assert ledger_count(url) == expected, "the ledger holds more records than dgemu has"
                if not KEEP and (r, k) != (ROUNDS - 1, WORKERS[-1]):
                    drop_database(names.pop())
        report("sync_records_per_s_{}_workers", sync_seconds, expected, "records/s",
               records=expected, connections=CONNECTIONS)
        analyze(env["KEYLEDGER_DATABASE_URL"])  # the last database: every record synced
        timed_invoices(env, 1, log)  # warm-up: every timed run rebuilds the same drafts
        invoice_seconds: dict[int, list[float]] = {k: [] for k in WORKERS}  # float-ok: seconds
        for _ in range(ROUNDS):
            for k in WORKERS:
                seconds, built = timed_invoices(env, k, log)
                assert built == customers, f"{built} drafts for {customers} customers"
                invoice_seconds[k].append(seconds)
        report("invoice_customers_per_s_{}_processes", invoice_seconds, customers, "customers/s",
               customers=customers, records=expected)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for name in names:
            if KEEP:
                print(f"kept database {name}", file=sys.stderr)
            else:
                drop_database(name)


def report(metric: str, seconds: dict[int, list[float]], items: int, unit: str, **extra) -> None:  # float-ok
    """One line per process count: the best round's rate (the least disturbed by load from elsewhere;
    every round's seconds alongside)."""
    baseline = None
    for k, runs in seconds.items():
        rate = items / min(runs)
        baseline = baseline or rate
        emit(metric.format(k), rate, unit, baseline, seconds=[round(x, 2) for x in runs], **extra)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--invoice-shard":
        invoice_shard(sys.argv[2])
    else:
        main()
