"""Benchmark of the REST API: GET /api/v1/customers/{id}/usage for a month, with 1M usage records in the
ledger, as a ratio to a trivial endpoint (GET /api/v1/health) measured in the same run.

    python bench/api.py                 # 1M records (60 customers, 30 days, 6 line items)
    BENCH_QUICK=1 python bench/api.py   # 50k records

The ledger is seeded in time order (as a sync writes it, window by window) through its own bulk
insert (``usage.store.insert_records``: records plus daily rollups) on SQLite; the API runs as a real
``keyledger serve`` subprocess.
Requests alternate between the two endpoints (so both see the same machine load); each metric is a
percentile over them. Prints one JSON object per line:
``{"bench": "api", "metric", "value", "unit", "baseline", "ratio"}``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from keyledger.core.clock import SystemClock
from keyledger.core.crypto import generate_key
from keyledger.customers import store as customer_store
from keyledger.customers.tokens import TokenService
from keyledger.db.engine import make_engine
from keyledger.db.migrate import upgrade
from keyledger.provider.port import UsageRecord
from keyledger.usage import store as usage_store

QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 50_000 if QUICK else 1_000_000
CUSTOMERS = 60
DAYS = 30
REQUESTS = 200 if QUICK else 1000  # per endpoint
BATCH = 20_000
ITEMS = [("streaming", "nova-3", "minute"), ("sync", "nova-3", "minute"), ("async", "nova-2", "minute"),
         ("streaming", "nova-3-medical", "minute"), ("sync", "aura-2-thalia-en", "character"),
         ("sync", "whisper-large", "minute")]


def emit(metric: str, value: float, unit: str, baseline: float | None = None) -> None:  # float-ok: timings
    line = {"bench": "api", "metric": metric, "value": round(value, 4), "unit": unit,
            "baseline": round(baseline, 4) if baseline is not None else None,
            "ratio": round(value / baseline, 3) if baseline else None}
    print(json.dumps(line), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, secret: str) -> tuple[str, str, datetime]:
    """Customers, keys and N records over one past month; returns (customer id, admin token, month)."""
    engine = make_engine(url)
    upgrade(engine)
    clock = SystemClock()
    now = clock.now()
    month = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=40)
    month = datetime(month.year, month.month, 1, tzinfo=UTC)  # a whole past month
    rng = random.Random(7)
    with engine.begin() as db:
        customer_store.insert_connection(db, {
            "id": "con_bench", "name": "main", "kind": "managed", "project_id": "p", "base_url": "http://x",
            "api_key_env": "DG", "api_key_ciphertext": None, "customer_id": None, "status": "active",
            "created_at": now})
        for i in range(CUSTOMERS):
            customer_store.insert_customer(db, {
                "id": f"cus_{i:03d}", "external_id": f"c{i:03d}", "name": f"Customer {i}", "email": None,
                "plan": None, "currency": "USD", "timezone": "UTC", "status": "active",
                "billing_mode": "managed", "created_at": now, "updated_at": now})
            for k in range(2):
                customer_store.insert_key(db, {
                    "id": f"key_{i:03d}_{k}", "customer_id": f"cus_{i:03d}", "connection_id": "con_bench",
                    "api_key_id": f"acc-{i:03d}-{k}", "secret_ciphertext": None, "comment": None,
                    "scopes": ["usage:write"], "tags": [], "operation_id": f"op_{i:03d}_{k}",
                    "status": "active", "created_at": now, "expires_at": None, "revoked_at": None})
    accessors = [f"acc-{i:03d}-{k}" for i in range(CUSTOMERS) for k in range(2)]
    span = DAYS * 86400
    done = 0
    while done < N:
        batch = []
        for j in range(min(BATCH, N - done)):
            method, model, unit = ITEMS[rng.randrange(len(ITEMS))]
            qty = Decimal(rng.randint(1, 6000)) / 100
            batch.append(UsageRecord(
                request_id=f"r{done + j:08d}", api_key_id=rng.choice(accessors),
                created=month + timedelta(seconds=(done + j) * span // N), endpoint="listen", method=method,
                model=model, line_item=f"{method}::{model}", unit=unit, quantity=qty,
                cost_usd=(qty * Decimal("0.0043")).quantize(Decimal("0.0000001"))))
        with engine.begin() as db:
            usage_store.insert_records(db, connection_id="con_bench", records=batch,
                                       keys_by_accessor=usage_store.key_map(db, "con_bench"),
                                       batch=f"b{done}", synced_at=now)
        done += len(batch)
    rt = type("Deps", (), {"engine": engine, "clock": clock})()
    _tok, admin = TokenService(rt, actor="bench").create_admin("bench")
    engine.dispose()
    return "cus_007", admin, month


def pct(values: list[float], q: float) -> float:  # float-ok: timings
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-api-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    secret = generate_key()
    t0 = time.perf_counter()
    customer, admin, month = seed(url, secret)
    print(f"# seeded {N} records in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update({"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_SECRET_KEY": secret,
                "KEYLEDGER_CONFIG": str(tmp / "none.toml")})
    server = subprocess.Popen([sys.executable, "-m", "keyledger", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("keyledger serve did not start")
            time.sleep(0.1)
        last = (month.replace(month=month.month % 12 + 1, year=month.year + (month.month == 12))
                - timedelta(days=1)).date()
        usage_path = f"/customers/{customer}/usage"
        params = {"from": month.date().isoformat(), "to": last.isoformat()}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
            body = c.get(usage_path, params=params).json()
            assert body["requests"] > 0, body
            for _ in range(20):  # warm-up
                c.get("/health")
                c.get(usage_path, params=params)
            trivial, usage = [], []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                c.get("/health").raise_for_status()
                trivial.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                c.get(usage_path, params=params).raise_for_status()
                usage.append((time.perf_counter() - t) * 1000)
        print(f"# customer {customer}: {body['requests']} requests in the month, {len(body['lines'])} lines",
              file=sys.stderr)
        emit("usage_month_p50_latency", pct(usage, 0.5), "ms", pct(trivial, 0.5))
        emit("usage_month_p99_latency", pct(usage, 0.99), "ms", pct(trivial, 0.99))
        emit("usage_month_mean_latency", statistics.fmean(usage), "ms", statistics.fmean(trivial))
        emit("ledger_records", N, "records")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
