"""``keyledger sync`` and ``keyledger usage`` as a user runs them: the §11 JSON contracts, unattributed
usage reported, and bad input answered with one line on stderr, exit 1 and nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from keyledger.db.tables_usage import sync_runs, sync_state, usage_records
from tests.usage_support import add_connection, add_customer, add_key, inject, ledger_rows, make_requests

from .usage_cli import KEY_ENV, Env


@pytest.fixture
def env(engine, dgemu, tmp_path) -> Env:
    # SQLite only: the CLI paths are the same on both databases; store/service tests cover PostgreSQL.
    url = str(engine.url)
    if not url.startswith("sqlite"):
        pytest.skip("CLI contract checks run on SQLite")
    add_connection(engine, base_url=dgemu.base_url, project_id=dgemu.project_id, api_key_env=KEY_ENV)
    add_customer(engine, "cus_a", "acme-1")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_a_old", "cus_a", "con_1", "dg-a-old", status="revoked")
    return Env(db_url=url, engine=engine, dgemu=dgemu, tmp=tmp_path)


def now() -> datetime:
    return datetime.now(UTC)


def one_line_error(res, *words: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "", res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def state(engine):
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(usage_records)).scalar(),
            conn.execute(select(sync_state.c.watermark)).scalar(),
        )


def test_sync_json_contract_and_usage_contract(env):
    reqs = make_requests(
        400,
        keys=["dg-a", "dg-a-old", "dg-stranger"],
        start=now() - timedelta(days=2),
        end=now() - timedelta(minutes=3),
    )
    inject(env.dgemu, reqs)
    out = env.json("sync")
    [run] = out["runs"]
    assert {
        "connection",
        "fetched",
        "inserted",
        "duplicates",
        "unattributed",
        "window_start",
        "window_end",
    } <= set(run)
    assert run["connection"] == "main" and run["fetched"] == 400 and run["inserted"] == 400
    assert run["unattributed"] == sum(1 for r in reqs if r["api_key_id"] == "dg-stranger") > 0
    assert datetime.fromisoformat(run["window_end"]).tzinfo is not None
    again = env.json("sync", "--connection", "main")["runs"][0]
    assert again["inserted"] == 0 and again["duplicates"] == again["fetched"]

    frm, to = (now() - timedelta(days=3)).date().isoformat(), now().date().isoformat()
    usage = env.json("usage", "acme-1", "--from", frm, "--to", to)
    assert set(usage) >= {"customer_id", "from", "to", "cost_usd", "requests", "lines"}
    assert usage["customer_id"] == "cus_a" and usage["from"] == frm
    mine = [r for r in ledger_rows(env.engine) if r["customer_id"] == "cus_a"]
    assert usage["requests"] == len(mine) == sum(1 for r in reqs if r["api_key_id"] != "dg-stranger")
    assert Decimal(usage["cost_usd"]) == sum((r["cost_usd"] for r in mine), Decimal(0))
    assert isinstance(usage["cost_usd"], str)
    for line in usage["lines"]:
        assert set(line) >= {"line_item", "unit", "quantity", "cost_usd", "requests"}
        assert "::" in line["line_item"] and isinstance(line["quantity"], str)
    assert sum(Decimal(x["cost_usd"]) for x in usage["lines"]) == Decimal(usage["cost_usd"])
    by_key = env.json("usage", "cus_a", "--from", frm, "--to", to, "--by", "key")
    assert {x["api_key_id"] for x in by_key["lines"]} == {"dg-a", "dg-a-old"}  # the revoked key counts
    by_day = env.json("usage", "cus_a", "--from", frm, "--to", to, "--by", "day")
    assert sum(x["requests"] for x in by_day["lines"]) == usage["requests"]
    human = env.run("usage", "acme-1", "--from", frm, "--to", to)
    assert human.returncode == 0 and "total: $" in human.stdout
    for by, shown in (("day", to[:5]), ("key", "dg-a-old")):
        human = env.run("usage", "acme-1", "--from", frm, "--to", to, "--by", by)
        assert human.returncode == 0 and shown in human.stdout, human.stdout + human.stderr
    plain = env.run("sync")
    assert plain.returncode == 0 and "main: fetched" in plain.stdout and "\x1b[" not in plain.stdout


def test_bad_input_is_one_line_exit_1_nothing_changed(env):
    inject(env.dgemu, make_requests(50, keys=["dg-a"], start=now() - timedelta(days=1), end=now()))
    assert env.run("sync").returncode == 0
    before = state(env.engine)
    inject(
        env.dgemu, make_requests(10, keys=["dg-a"], start=now() - timedelta(minutes=20), end=now(), seed=3)
    )
    one_line_error(env.run("sync", "--connection", "nope"), "nope")
    one_line_error(env.run("sync", "--since", "2026-13-01"), "--since")
    one_line_error(env.run("sync", "--since", "2026-11-02", "--until", "2026-11-01"), "--since")
    one_line_error(env.run("sync", **{KEY_ENV: "wrong-key"}), "refused")
    assert state(env.engine) == before
    with env.engine.connect() as conn:
        last = conn.execute(select(sync_runs).order_by(sync_runs.c.started_at.desc())).mappings().first()
    assert last["status"] == "failed" and "refused" in last["error"]
    one_line_error(env.run("usage", "nobody"), "nobody")
    one_line_error(env.run("usage", "acme-1", "--from", "yesterday"), "--from")
    one_line_error(env.run("usage", "acme-1", "--by", "month"), "--by")
    one_line_error(env.run("usage", "acme-1", "--from", "2026-11-02", "--to", "2026-11-01"), "--from")
    one_line_error(env.run("reconcile", "--period", "2026-13"), "--period")
    one_line_error(env.run("reconcile", "--period", "2026-11", "--connection", "nope"), "nope")
    assert state(env.engine) == before


def test_unreachable_deepgram_fails_cleanly(env):
    from keyledger.db.tables_customers import connections

    with env.engine.begin() as conn:
        conn.execute(connections.update().values(base_url="http://127.0.0.1:9"))
    before = state(env.engine)
    res = env.run("sync", KEYLEDGER_PROVIDER_MAX_RETRIES="1")
    one_line_error(res, "cannot reach Deepgram")
    assert state(env.engine) == before
    with env.engine.connect() as conn:
        row = conn.execute(select(sync_runs)).mappings().one()
        lease = conn.execute(select(sync_state.c.lease_owner)).scalar()
    assert row["status"] == "failed" and lease is None
