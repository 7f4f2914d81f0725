"""Helpers shared by the usage tests: seed rows with SQL, recompute rollups from the ledger, read dgemu's
request log through the owner key (the oracle)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, select

from keyledger.core.money import loads_exact
from keyledger.db.tables_customers import connections, customers, keys
from keyledger.db.tables_usage import usage_daily, usage_records

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_connection(
    engine: Engine,
    cid="con_1",
    name="main",
    project_id="p",
    base_url="http://127.0.0.1:9",
    api_key_env="DG_KEY",
    kind="managed",
) -> str:
    with engine.begin() as conn:
        conn.execute(
            connections.insert().values(
                id=cid,
                name=name,
                kind=kind,
                project_id=project_id,
                base_url=base_url,
                api_key_env=api_key_env,
                status="active",
                created_at=T0,
            )
        )
    return cid


def add_customer(engine: Engine, cid: str, external_id: str | None = None) -> str:
    with engine.begin() as conn:
        conn.execute(
            customers.insert().values(
                id=cid, external_id=external_id or f"ext-{cid}", name=cid, created_at=T0, updated_at=T0
            )
        )
    return cid


def add_key(
    engine: Engine, key_id: str, customer_id: str, connection_id: str, api_key_id: str, status="active"
) -> None:
    with engine.begin() as conn:
        conn.execute(
            keys.insert().values(
                id=key_id,
                customer_id=customer_id,
                connection_id=connection_id,
                api_key_id=api_key_id,
                scopes=[],
                tags=[],
                operation_id=f"op-{key_id}",
                status=status,
                created_at=T0,
            )
        )


def ledger_rows(engine: Engine, connection_id: str | None = None) -> list[dict]:
    stmt = select(usage_records)
    if connection_id:
        stmt = stmt.where(usage_records.c.connection_id == connection_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def rollups(engine: Engine) -> dict[tuple, tuple]:
    with engine.connect() as conn:
        return {
            (r.connection_id, r.api_key_id, r.day, r.line_item): (
                r.customer_id,
                r.unit,
                r.quantity,
                r.cost_usd,
                r.requests,
            )
            for r in conn.execute(select(usage_daily))
        }


def recomputed_rollups(engine: Engine) -> dict[tuple, tuple]:
    """The daily rollups as they must be: recomputed in Python from every ledger row."""
    cells: dict[tuple, list] = defaultdict(lambda: [None, None, Decimal(0), Decimal(0), 0])
    for r in ledger_rows(engine):
        cell = cells[(r["connection_id"], r["api_key_id"], r["day"], r["line_item"])]
        cell[0] = r["customer_id"]
        cell[1] = r["unit"]
        cell[2] += r["quantity"]
        cell[3] += r["cost_usd"]
        cell[4] += 1
    return {k: tuple(v) for k, v in cells.items()}


def dgemu_requests(
    dgemu, start: str = "2000-01-01", end: str = "2100-01-01", project_id=None, key=None
) -> list[dict]:
    """Every request record dgemu holds, read through the owner key, paging to the end."""
    out: list[dict] = []
    pid = project_id or dgemu.project_id
    with dgemu.client(key) as c:
        page = 0
        while True:
            r = c.get(
                f"/v1/projects/{pid}/requests",
                params={"start": start, "end": end, "limit": 1000, "page": page},
            )
            r.raise_for_status()
            items = loads_exact(r.content)["requests"]
            out.extend(items)
            if len(items) < 1000:
                return out
            page += 1


def inject(dgemu, requests: list[dict], project_id=None, key=None) -> int:
    pid = project_id or dgemu.project_id
    total = 0
    with dgemu.client(key) as c:
        for i in range(0, len(requests), 5000):
            r = c.post(f"/_emulator/projects/{pid}/requests", json={"requests": requests[i : i + 5000]})
            r.raise_for_status()
            total += r.json()["created"]
    return total


def faults(dgemu, **values) -> None:
    with dgemu.client() as c:
        c.post("/_emulator/faults", json=values).raise_for_status()


MODELS = [
    ("listen", "sync", "nova-3"),
    ("listen", "streaming", "nova-3-medical"),
    ("speak", "sync", "aura-2-thalia-en"),
    ("read", "sync", "read"),
    ("agent", "streaming", "voice-agent"),
    ("listen", "async", "nova-2-phonecall"),
]


def make_requests(n: int, *, keys: list[str], start: datetime, end: datetime, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    span = (end - start).total_seconds()
    out = []
    for _ in range(n):
        endpoint, method, model = rnd.choice(MODELS)
        item = {
            "api_key_id": rnd.choice(keys),
            "endpoint": endpoint,
            "method": method,
            "model": model,
            "created": (start + timedelta(seconds=rnd.uniform(0, span))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if endpoint == "speak":
            item["characters"] = rnd.randint(1, 3000)
        elif endpoint == "read":
            item["tokens_in"], item["tokens_out"] = rnd.randint(1, 5000), rnd.randint(1, 500)
        else:
            item["duration_seconds"] = round(rnd.uniform(0.5, 900), 3)
        out.append(item)
    return out
