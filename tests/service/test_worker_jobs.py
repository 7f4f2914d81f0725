"""The worker's jobs on SQLite and PostgreSQL with a driven clock: one cycle syncs, evaluates budgets
(revoking at dgemu), delivers the events; invoices run once their period closed plus the grace period;
job leases keep concurrent workers from running the same job twice."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.clock import FrozenClock
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_invoices import invoices
from keyledger.notifications.service import WebhookService
from keyledger.pricing.service import import_plan_file
from keyledger.worker.runner import Worker
from keyledger.worker.scheduler import Job, Scheduler
from tests.service.test_budgets_enforcement import events, inject_minutes, speak
from tests.service.test_webhooks_delivery import Receiver

PLANS = Path(__file__).resolve().parents[2] / "src" / "keyledger" / "demo" / "plans"


def runtime_for(db_url, dgemu, clock=None, secret_key=None, **settings) -> Runtime:
    rt = Runtime(
        settings=Settings(
            database_url=db_url,
            secret_key=secret_key or generate_key(),
            provider_max_retries=1,
            sync_settle_seconds=0,
            webhook_allow_private_networks=True,
            **settings,
        ),
        environ={"DEEPGRAM_API_KEY": dgemu.owner_key},
    )
    if clock is not None:
        rt.clock = clock
    return rt


def test_one_cycle_syncs_enforces_and_delivers(db_url, dgemu):
    rt = runtime_for(db_url, dgemu)
    receiver = Receiver()
    try:
        ConnectionService(rt, environ=rt.environ).add(
            "main", project_id=dgemu.project_id, base_url=dgemu.base_url
        )
        CustomerService(rt).add("Acme", external_id="acme")
        issued = KeyService(rt).create("acme")
        ep = WebhookService(rt.engine, rt.cipher, rt.clock).add(receiver.url)
        BudgetService(rt).set("acme", limit="1.00", action="revoke")
        inject_minutes(dgemu, issued.key.api_key_id, 300)
        ran = Worker(rt).once()
        assert ran[0].startswith("sync:") and ran[1:] == ["budgets", "invoices", "deliver"]
        assert speak(dgemu, issued.secret) == 401
        got = []
        for headers, body in receiver.requests:
            Webhook(ep["secret"]).verify(body, headers)
            got.append(json.loads(body)["type"])
        # every event since the endpoint was added (key.created came before it)
        assert sorted(got) == sorted(e["type"] for e in events(rt) if e["type"] != "key.created")
        assert got.count("customer.suspended") == 1 and got.count("key.revoked") == 1
        assert Worker(rt).once()  # a second cycle sends nothing new
        assert len(receiver.requests) == len(got)
    finally:
        receiver.close()
        rt.engine.dispose()


def test_invoices_run_after_period_close_plus_grace(db_url, dgemu):
    clock = FrozenClock(datetime(2026, 10, 10, 12, 0, tzinfo=UTC))
    rt = runtime_for(db_url, dgemu, clock, worker_invoice_grace_seconds=2 * 24 * 3600)
    try:
        import_plan_file(rt.engine, PLANS / "growth.yaml", clock=clock)
        CustomerService(rt).add("Acme", external_id="acme", plan="growth", timezone="America/New_York")
        clock.set(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))  # October closed, grace not over
        w = Worker(rt)
        w.once()
        with rt.engine.connect() as db:
            assert db.execute(select(invoices)).all() == []
        clock.set(datetime(2026, 11, 3, 4, 1, tzinfo=UTC))  # Nov 1 04:00 UTC (local midnight) + 2 days
        w.once()
        with rt.engine.connect() as db:
            rows = db.execute(select(invoices.c.period, invoices.c.status)).all()
        assert [tuple(r) for r in rows] == [("2026-10", "finalized")]
        assert [e["payload"]["period"] for e in events(rt, "invoice.finalized")] == ["2026-10"]
        clock.advance(timedelta(hours=2))
        w.once()
        assert len(events(rt, "invoice.finalized")) == 1  # nothing twice
    finally:
        rt.engine.dispose()


def test_concurrent_workers_never_run_a_job_twice(engine):
    clock = FrozenClock(datetime(2026, 11, 2, tzinfo=UTC))
    runs: list[str] = []
    gate = threading.Event()

    def slow() -> None:
        runs.append("x")
        gate.wait(5)

    job = Job("demo", timedelta(minutes=5), slow)
    schedulers = [Scheduler(engine, clock) for _ in range(6)]
    threads = [threading.Thread(target=s.run_job, args=(job,)) for s in schedulers]
    for t in threads:
        t.start()
    threading.Timer(1.0, gate.set).start()
    for t in threads:
        t.join(30)
    assert runs == ["x"]
    assert not schedulers[0].run_job(job)  # not due again for five minutes
    clock.advance(timedelta(minutes=5))
    assert schedulers[1].run_job(job) and runs == ["x", "x"]


def test_dead_worker_lease_is_taken_over(engine):
    clock = FrozenClock(datetime(2026, 11, 2, tzinfo=UTC))
    runs = []
    job = Job("j", timedelta(minutes=1), lambda: runs.append(1))
    dead = Scheduler(engine, clock, owner=f"{socket.gethostname()}|999999|wrk_dead")
    assert dead.claim(job)  # claimed, then "killed" before finishing
    live = Scheduler(engine, clock)
    assert live.run_job(job) and runs == [1]


@pytest.mark.parametrize("signal_name", ["SIGTERM"])
def test_worker_loop_stops_when_asked(engine, dgemu, db_url, signal_name):
    rt = runtime_for(db_url, dgemu)
    w = Worker(rt, poll_seconds=0.05)
    t = threading.Thread(target=w.run)
    t.start()
    threading.Timer(0.5, w.stop.set).start()
    t.join(10)
    assert not t.is_alive()
    rt.engine.dispose()


def test_several_workers_share_the_work_without_doing_anything_twice(db_url, dgemu):
    from sqlalchemy import func

    from keyledger.db.outbox import enqueue
    from keyledger.db.tables_usage import sync_runs

    rt = runtime_for(db_url, dgemu)
    receiver = Receiver()
    try:
        ConnectionService(rt, environ=rt.environ).add(
            "main", project_id=dgemu.project_id, base_url=dgemu.base_url
        )
        WebhookService(rt.engine, rt.cipher, rt.clock).add(receiver.url)
        with rt.engine.begin() as db:
            ids = [enqueue(db, "sync.failed", {"n": i}, rt.clock.now()) for i in range(30)]
        key = rt.settings.secret_key.get_secret_value()
        workers = [Worker(runtime_for(db_url, dgemu, secret_key=key)) for _ in range(3)]
        threads = [threading.Thread(target=w.run, kwargs={"max_cycles": 1}) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        got = [h["webhook-id"] for h, _ in receiver.requests]
        assert sorted(got) == sorted(ids)  # each event once
        with rt.engine.connect() as db:
            assert db.execute(select(func.count()).select_from(sync_runs)).scalar_one() == 1
        for w in workers:
            w.rt.engine.dispose()
    finally:
        receiver.close()
        rt.engine.dispose()
