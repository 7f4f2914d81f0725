"""``keyledger worker`` as a process: SIGKILL mid-delivery or mid-sync loses nothing and sends nothing twice
under a new id; SIGTERM stops it cleanly. Real dgemu, real receiver (a thread), real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from keyledger.db.engine import make_engine
from keyledger.db.tables_notifications import webhook_events
from keyledger.db.tables_usage import usage_records
from tests.service.test_budgets_enforcement import inject_minutes, speak
from tests.service.test_webhooks_delivery import Receiver


@pytest.fixture
def setup(kl_env, run_cli, dgemu):
    if not kl_env.env["KEYLEDGER_DATABASE_URL"].startswith("sqlite"):
        pytest.skip("process-level checks run on SQLite; service tests cover PostgreSQL")
    kl_env.env.update(
        {
            "DEEPGRAM_API_KEY": dgemu.owner_key,
            "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
            "KEYLEDGER_PROVIDER_MAX_RETRIES": "1",
            "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        }
    )
    receiver = Receiver()

    def ok(*args: str, **kw):
        res = run_cli(*args, **kw)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return json.loads(res.stdout) if "--json" in args else res.stdout

    ok.receiver = receiver
    ok.secret = ok("webhooks", "add", receiver.url, "--json")["secret"]
    ok("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url)
    ok("customers", "add", "Acme", "--external-id", "acme")
    ok.key = ok("keys", "create", "acme", "--json")
    ok.engine = make_engine(kl_env.env["KEYLEDGER_DATABASE_URL"])
    yield ok
    receiver.close()
    ok.engine.dispose()


def event_ids(engine) -> list[str]:
    with engine.connect() as db:
        return [r[0] for r in db.execute(select(webhook_events.c.id))]


def test_sigkill_mid_delivery_resends_under_the_same_id(setup, run_cli, kl_env):
    setup("customers", "suspend", "acme")  # customer.suspended, key.revoked (+ key.created before)
    ids = event_ids(setup.engine)
    assert len(ids) == 3
    killed = run_cli("worker", "--once", env=kl_env.with_(KEYLEDGER_FAULT="webhooks.after_send"))
    assert killed.returncode == -signal.SIGKILL
    assert len(setup.receiver.requests) == 1  # sent, then killed before recording it
    again = run_cli("worker", "--once")
    assert again.returncode == 0, again.stderr
    seen = Counter(h["webhook-id"] for h, _ in setup.receiver.requests)
    assert set(seen) == set(ids)  # every event, no new id
    assert sorted(seen.values()) == [1, 1, 2]  # only the interrupted one twice, under its own id
    for headers, body in setup.receiver.requests:
        Webhook(setup.secret).verify(body, headers)


def test_sigkill_mid_sync_loses_nothing_and_revokes_once(setup, run_cli, kl_env, dgemu):
    setup("budgets", "set", "acme", "--limit", "1.00", "--action", "revoke")
    inject_minutes(dgemu, setup.key["api_key_id"], 300, n=300)
    since = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()
    env = kl_env.with_(KEYLEDGER_SYNC_PAGE_LIMIT="50", KEYLEDGER_SYNC_LOOKBACK_SECONDS="2764800")
    killed = run_cli("worker", "--once", env={**env, "KEYLEDGER_FAULT": "sync.after_page_fetch:3"})
    assert killed.returncode == -signal.SIGKILL
    assert speak(dgemu, setup.key["secret"]) == 200  # not enough synced to act yet
    done = run_cli("worker", "--once", env=env)
    assert done.returncode == 0, done.stderr
    res = run_cli("sync", "--since", since, "--json", env=env)
    assert res.returncode == 0, res.stderr
    with setup.engine.connect() as db:
        # the 300 injected records and the speak call above: nothing lost, nothing twice
        assert db.execute(select(func.count()).select_from(usage_records)).scalar_one() == 301
    assert speak(dgemu, setup.key["secret"]) == 401
    types = Counter(json.loads(b)["type"] for _, b in setup.receiver.requests)
    assert types["customer.suspended"] == 1 and types["key.revoked"] == 1
    assert types["budget.threshold_reached"] == 3
    assert len({h["webhook-id"] for h, _ in setup.receiver.requests}) == len(setup.receiver.requests)


def test_sigterm_stops_the_worker_cleanly(setup, kl_env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyledger", "worker"],
        env=kl_env.env,
        cwd=kl_env.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "started" in proc.stdout.readline()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped" in proc.stderr.read()
    assert len(setup.receiver.requests) == 1  # it delivered key.created while it ran
