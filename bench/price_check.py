"""Benchmark: the price check over a month of the stored ledger vs reading the same records.

    python bench/price_check.py                 # 1M usage records
    BENCH_QUICK=1 python bench/price_check.py   # 100k usage records

A fresh SQLite database in a temp dir (schema by ``keyledger.db.migrate.upgrade``), one managed connection
and ``usage_records`` rows for one month written with the driver's ``executemany`` (amounts as
:func:`to_sqlite_units`, exact), Deepgram's usd = the shipped list price × quantity rounded to 6 places,
one record in 1000 overpriced by 5 %, and one line item without a list price (untimed).

Metrics (one JSON object per line: ``{"bench": "price_check", "metric", "value", "unit", "baseline",
"ratio"}``):

- ``check_seconds``: ``price_check_service.price_check_report(engine, config, period=PERIOD)`` (best of
  3); baseline: the same records streamed by ``price_check_store.period_records`` and only counted (the
  read and decode the check cannot avoid). The ratio is what the per-record Decimal check costs on top.
- ``check_records_per_second``: records checked per second.
- ``sum_sql_seconds``: ``SELECT line_item, count(*), sum(cost_usd) … GROUP BY line_item`` over the same
  records, for scale (what a reconciliation's ledger side costs); it cannot check per record.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from _common import emit

QUICK = os.environ.get("BENCH_QUICK") == "1"
RECORDS = int(os.environ.get("BENCH_RECORDS", 100_000 if QUICK else 1_000_000))
PERIOD = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
CONNECTION = "con_bench"
# line item, ledger unit, quantity range (in 1/100 of the unit); prices come from the shipped list
ITEMS = (
    ("streaming::nova-3", "minute", (10, 3000)),
    ("sync::nova-3", "minute", (10, 6000)),
    ("async::nova-3", "minute", (10, 6000)),
    ("sync::aura-2", "character", (10_000, 500_000)),
    ("sync::nova-2", "minute", (10, 6000)),  # no list price: reported as unknown
)
MICRO = Decimal("0.000001")


def _dt(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def generate(db_path: Path) -> int:
    from sqlalchemy import insert

    from keyledger.db.engine import make_engine
    from keyledger.db.metadata import to_sqlite_units
    from keyledger.db.migrate import upgrade
    from keyledger.db.tables_customers import connections
    from keyledger.provider.deepgram.prices import load_price_list

    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    with engine.begin() as db:
        db.execute(insert(connections).values(
            id=CONNECTION, name="main", kind="managed", project_id="p", base_url="http://127.0.0.1:9",
            api_key_env="DEEPGRAM_API_KEY", status="active", created_at=START,
        ))
    engine.dispose()
    prices = load_price_list()
    rnd = random.Random(5)
    seconds = int((END - START).total_seconds())
    cols = ("connection_id", "request_id", "api_key_id", "customer_id", "key_id", "created", "day",
            "endpoint", "method", "model", "line_item", "unit", "quantity", "cost_usd", "code", "tags",
            "synced_at", "batch")
    sql = f"INSERT INTO usage_records ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA synchronous=OFF")
    overpriced = 0
    for base in range(0, RECORDS, 50_000):
        rows = []
        for n in range(base, min(base + 50_000, RECORDS)):
            item, unit, (lo, hi) = ITEMS[rnd.randrange(len(ITEMS))]
            quantity = Decimal(rnd.randint(lo, hi)) / 100
            if unit == "character":
                quantity = quantity.to_integral_value()
            created = START + timedelta(seconds=rnd.randrange(seconds), microseconds=rnd.randrange(10**6))
            price = prices.price_at(item, "pay-as-you-go", created)
            cost = price.cost(quantity) if price else quantity * Decimal("0.0043")
            if n % 1000 == 999:
                cost *= Decimal("1.05")
                overpriced += price is not None
            cost = cost.quantize(MICRO, rounding=ROUND_HALF_EVEN)
            ts = _dt(created)
            method, _, model = item.partition("::")
            rows.append((CONNECTION, f"req-{n:08d}", "acc", None, None, ts, ts[:10], "listen", method,
                         model, item, unit, to_sqlite_units(quantity), to_sqlite_units(cost), 200, None, ts,
                         "bench"))
        with con:
            con.executemany(sql, rows)
    con.execute("ANALYZE")
    con.close()
    return overpriced


def best_of(n: int, fn):
    times, result = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-price-check-"))
    db_path = tmp / "kl.db"
    g0 = time.perf_counter()
    overpriced = generate(db_path)
    gen_s = time.perf_counter() - g0

    from keyledger.core.config import Settings
    from keyledger.db.engine import make_engine
    from keyledger.usage import model, price_check_service, price_check_store

    engine = make_engine(f"sqlite:///{db_path}")
    config = price_check_service.config_from(Settings(database_url=f"sqlite:///{db_path}"))
    first, last = model.parse_period(PERIOD)

    def read_only() -> int:
        with engine.connect() as conn:
            return sum(1 for _ in price_check_store.period_records(
                conn, connection_ids=[CONNECTION], first=first, last=last))

    def sum_sql() -> int:
        with engine.connect() as conn:
            return len(conn.exec_driver_sql(
                "SELECT line_item, count(*), sum(cost_usd) FROM usage_records "
                "WHERE connection_id = ? AND created >= ? AND created < ? GROUP BY line_item",
                (CONNECTION, _dt(START), _dt(END)),
            ).fetchall())

    read_s, read_n = best_of(3, read_only)
    sum_s, _ = best_of(3, sum_sql)
    check_s, report = best_of(
        3, lambda: price_check_service.price_check_report(engine, config, period=PERIOD)
    )
    engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    unknown = sum(u["records"] for u in report["unknown_line_items"])
    size = {"records": RECORDS}
    emit("price_check", "check_seconds", check_s, "s", read_s, records_read=read_n,
         checked=report["checked_records"], unknown=unknown, disagreeing=report["disagreeing_records"],
         overpriced=overpriced, generate_seconds=round(gen_s, 1), **size)
    emit("price_check", "check_records_per_second", RECORDS / check_s, "records/s", RECORDS / read_s, **size)
    emit("price_check", "sum_sql_seconds", sum_s, "s", **size)
    if report["disagreeing_records"] != overpriced or report["checked_records"] + unknown != RECORDS:
        raise SystemExit(f"check wrong: {report['disagreeing_records']} flagged of {overpriced} overpriced")


if __name__ == "__main__":
    sys.exit(main())
