"""Benchmark: budget breach → key revoked at Deepgram (dgemu), with a real ``keyledger worker`` process.

    python bench/budget.py                    # 5 trials, sync interval 10 s
    BENCH_QUICK=1 python bench/budget.py      # 3 trials, sync interval 5 s

Starts its own dgemu and a fresh SQLite database, sets up a connection, then for each trial a customer with
a key and a ``revoke`` budget of 1.00 USD. With ``keyledger worker`` running (sync every S seconds), it
pushes usage over the cap at t0 (bulk injection into dgemu's request log, as Deepgram would record it) and
polls ``POST /v1/speak`` with the customer's key until dgemu answers 401 (t1).

Metrics (one JSON object per line: ``{"bench": "budget", "metric", "value", "unit", "baseline", "ratio"}``):

- ``breach_to_revoke_p50`` / ``breach_to_revoke_max``: t1 − t0; baseline = the promise, one sync interval
  + 5 s (ratio < 1 keeps it);
- ``evaluate_all_per_customer``: ``BudgetService.evaluate_all`` over 200 customers with budgets and a month
  of rollups, per customer; baseline: a bare ``SELECT sum(cost_usd)`` per customer on the same database.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

import _common

PROJECT_ID = "c0ffee00-0000-4000-8000-0000000000b6"
OWNER_KEY = "dgemu_owner_bench_budget_" + "0" * 15
QUICK = os.environ.get("BENCH_QUICK") == "1"
TRIALS = 3 if QUICK else 5
INTERVAL = 5 if QUICK else 10
ROOT = Path(__file__).resolve().parents[1]


def emit(metric: str, value: float, unit: str, baseline: float | None = None, **extra) -> None:  # float-ok
    _common.emit("budget", metric, value, unit, baseline, **extra)


def start_dgemu(tmp: Path) -> tuple[subprocess.Popen, str]:
    return _common.start_dgemu(PROJECT_ID, OWNER_KEY, tmp / "dgemu.log", mode="wb")


def main() -> None:
    from keyledger.bootstrap import Runtime
    from keyledger.budgets.service import BudgetService
    from keyledger.core.config import Settings
    from keyledger.core.crypto import generate_key
    from keyledger.customers.service import ConnectionService, CustomerService, KeyService
    from keyledger.db.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-budget-"))
    dg, base = start_dgemu(tmp)
    db_url = f"sqlite:///{tmp / 'kl.db'}"
    secret = generate_key()
    environ = {"DEEPGRAM_API_KEY": OWNER_KEY}
    rt = Runtime(
        settings=Settings(database_url=db_url, secret_key=secret, sync_settle_seconds=0), environ=environ
    )
    upgrade(rt.engine)
    ConnectionService(rt, environ=environ).add("main", project_id=PROJECT_ID, base_url=base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update(
        {
            "KEYLEDGER_DATABASE_URL": db_url,
            "KEYLEDGER_SECRET_KEY": secret,
            "DEEPGRAM_API_KEY": OWNER_KEY,
            "KEYLEDGER_CONFIG": str(tmp / "absent.toml"),
            "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
            "KEYLEDGER_WORKER_SYNC_INTERVAL_SECONDS": str(INTERVAL),
            "KEYLEDGER_SYNC_LOOKBACK_SECONDS": "3600",
        }
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "keyledger", "worker"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "worker.log").open("wb"),
    )
    latencies = []
    owner = httpx.Client(base_url=base, headers={"Authorization": f"Token {OWNER_KEY}"}, timeout=30)
    try:
        for trial in range(TRIALS):
            ext = f"bench-{trial}"
            CustomerService(rt).add(f"Bench {trial}", external_id=ext)
            issued = KeyService(rt).create(ext)
            BudgetService(rt).set(ext, limit="1.00", action="revoke")
            time.sleep(INTERVAL * (trial % 3) / 3)  # breach at different points of the sync cycle
            created = datetime.now(UTC) - timedelta(seconds=1)
            items = [
                {
                    "api_key_id": issued.key.api_key_id,
                    "created": (created + timedelta(microseconds=i)).isoformat(),
                    "endpoint": "listen",
                    "method": "sync",
                    "model": "nova-3",
                    "duration_seconds": 3600,
                }
                for i in range(5)
            ]  # 5 hours of nova-3: 1.29 USD
            t0 = time.monotonic()
            owner.post(
                f"/_emulator/projects/{PROJECT_ID}/requests", json={"requests": items}
            ).raise_for_status()
            with httpx.Client(base_url=base, headers={"Authorization": f"Token {issued.secret}"}) as c:
                while time.monotonic() - t0 < INTERVAL + 60:
                    if c.post("/v1/speak", json={"text": "x"}).status_code == 401:
                        break
                    time.sleep(0.05)
            latencies.append(time.monotonic() - t0)
        bound = INTERVAL + 5
        emit(
            "breach_to_revoke_p50",
            statistics.median(latencies),
            "s",
            bound,
            sync_interval_s=INTERVAL,
            trials=TRIALS,
        )
        emit(
            "breach_to_revoke_max",
            max(latencies),
            "s",
            bound,
            sync_interval_s=INTERVAL,
            all=[round(x, 3) for x in latencies],
        )  # float-ok
    finally:
        worker.terminate()
        worker.wait(30)
        owner.close()

    # evaluate_all over 200 customers with a month of rollups
    from decimal import Decimal

    from sqlalchemy import func, select

    from keyledger.db.tables_usage import usage_daily
    from keyledger.provider.port import UsageRecord
    from keyledger.usage import store as usage_store

    n = 200
    now = datetime.now(UTC)
    records = []
    with rt.engine.begin() as db:
        conn_id = usage_store.list_connections(db)[0].id
    for i in range(n):
        ext = f"eval-{i}"
        CustomerService(rt).add(f"Eval {i}", external_id=ext)
        BudgetService(rt).set(ext, limit="100", thresholds="50,80,100", action="notify")
    from keyledger.customers import store as cstore
    from keyledger.db.tables_customers import keys as keys_t

    with rt.engine.begin() as db:
        for i, c in enumerate(cstore.list_customers(db)):
            db.execute(
                keys_t.insert().values(
                    id=f"key_e{i}",
                    customer_id=c.id,
                    connection_id=conn_id,
                    api_key_id=f"acc-{i}",
                    scopes=[],
                    tags=[],
                    operation_id=f"op-e{i}",
                    status="active",
                    created_at=now,
                )
            )
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max(int((now - start).total_seconds()), 3600)
    for i in range(n):
        for j in range(60):
            records.append(
                UsageRecord(
                    f"e{i}-{j}",
                    f"acc-{i}",
                    start + timedelta(seconds=span * j // 60),
                    "listen",
                    "sync",
                    "nova-3",
                    "sync::nova-3",
                    "minute",
                    Decimal("1"),
                    Decimal("0.0043"),
                )
            )
    with rt.engine.begin() as db:
        usage_store.insert_records(
            db,
            connection_id=conn_id,
            records=records,
            keys_by_accessor=usage_store.key_map(db, conn_id),
            batch="bench",
            synced_at=now,
        )
    t = time.perf_counter()
    BudgetService(rt).evaluate_all()
    per = (time.perf_counter() - t) / (n + TRIALS)
    with rt.engine.connect() as db:
        ids = [c.id for c in cstore.list_customers(db)]
        t = time.perf_counter()
        for cid in ids:
            db.execute(
                select(func.sum(usage_daily.c.cost_usd)).where(usage_daily.c.customer_id == cid)
            ).scalar()
        bare = (time.perf_counter() - t) / len(ids)
    emit("evaluate_all_per_customer", per * 1000, "ms", bare * 1000, customers=n + TRIALS)
    dg.terminate()
    dg.wait(10)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
