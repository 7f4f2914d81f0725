"""Concurrency with real processes over one database (the point is PostgreSQL; SQLite runs a smaller
fleet, since it serializes writers but must stay correct): ``keyledger worker`` loops and ``keyledger
sync`` runs started together while traffic keeps arriving at dgemu; two ``invoices run --finalize``
over the same drafts; several processes evaluating the same breached budget.

After each: the ledger is exactly dgemu's request log (ids, keys, USD; none twice), rollups equal a
recomputation, watermarks are sane and no lease is left; every invoice is finalized once with gapless
unique numbers and one ``invoice.finalized`` event; the key is deleted at Deepgram once (counted by a
proxy in front of dgemu, which sees even the idempotent repeats), each threshold fires once, and no
webhook is delivered twice.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_budgets import budget_periods
from keyledger.db.tables_customers import audit_log, customers, key_operations
from keyledger.db.tables_invoices import invoices, number_counters
from keyledger.db.tables_notifications import webhook_events
from keyledger.invoices import store as invoice_store
from keyledger.invoices.service import InvoiceService
from keyledger.notifications.service import WebhookService
from tests.invoice_support import World
from tests.service.test_budgets_enforcement import inject_minutes, month_start
from tests.service.test_webhooks_delivery import Receiver
from tests.usage_support import dgemu_requests, inject, ledger_rows, make_requests

from ._concurrency_support import (
    CountingProxy,
    Fleet,
    assert_all_ok,
    assert_ledger_is_dgemu,
    assert_sync_state_sane,
    cli_env,
)


def fleet_size(db_url: str, postgres: int, sqlite: int) -> int:
    return postgres if db_url.startswith("postgresql") else sqlite


class Site:
    """Two dgemu projects behind a counting proxy, two connections, customers with keys, a webhook
    receiver, a budget that revokes: set up in-process; the fleet runs as subprocesses."""

    def __init__(self, db_url: str, dgemu, tmp_path) -> None:
        self.dgemu = dgemu
        self.proxy = CountingProxy(dgemu.base_url)
        self.receiver = Receiver()
        with dgemu.client() as c:
            second = c.post("/_emulator/projects", json={"name": "second"}).json()
        self.second_project, self.second_key = second["project_id"], second["owner_key"]
        secret = generate_key()
        environ = {"DEEPGRAM_API_KEY": dgemu.owner_key, "DG_SECOND_KEY": self.second_key}
        self.rt = Runtime(
            settings=Settings(
                database_url=db_url,
                secret_key=secret,
                provider_max_retries=1,
                sync_settle_seconds=0,
                webhook_allow_private_networks=True,
            ),
            environ=environ,
        )
        self.engine = self.rt.engine
        self.endpoint = WebhookService(self.engine, self.rt.cipher, self.rt.clock).add(self.receiver.url)
        connections = ConnectionService(self.rt, environ=environ)
        main = connections.add("main", project_id=dgemu.project_id, base_url=self.proxy.url)
        other = connections.add(
            "second", project_id=self.second_project, base_url=self.proxy.url, api_key_env="DG_SECOND_KEY"
        )
        self.projects = {
            main.id: (dgemu.project_id, dgemu.owner_key),
            other.id: (self.second_project, self.second_key),
        }
        self.keys: dict[str, list[str]] = {main.id: [], other.id: []}
        customers = CustomerService(self.rt)
        self.issued = {}
        for ext in ("acme", "blue", "cato", "dune"):
            customers.add(ext.title(), external_id=ext)
            for con in ("main", "second"):
                k = KeyService(self.rt).create(ext, connection=con)
                self.issued[(ext, con)] = k
                self.keys[main.id if con == "main" else other.id].append(k.key.api_key_id)
        self.env = cli_env(
            db_url,
            secret,
            tmp_path,
            DEEPGRAM_API_KEY=dgemu.owner_key,
            DG_SECOND_KEY=self.second_key,
            KEYLEDGER_SYNC_SETTLE_SECONDS="0",
            KEYLEDGER_SYNC_LOOKBACK_SECONDS="7200",
            KEYLEDGER_SYNC_WINDOW_DAYS="1",
            KEYLEDGER_SYNC_PAGE_LIMIT="100",
            KEYLEDGER_WORKER_SYNC_INTERVAL_SECONDS="1",
            KEYLEDGER_WORKER_BUDGET_INTERVAL_SECONDS="1",
            KEYLEDGER_WORKER_DELIVERY_INTERVAL_SECONDS="1",
        )
        self.fleet = Fleet(self.env, tmp_path)

    def close(self) -> None:
        self.receiver.close()
        self.proxy.close()
        self.engine.dispose()

    def cli(self, *args: str) -> str:
        self.fleet.start(*args)
        [(_, rc, out, err)] = self.fleet.wait()
        assert rc == 0, (args, out, err)
        return out

    def events(self, type_: str | None = None) -> list[dict]:
        q = select(webhook_events).order_by(webhook_events.c.created_at)
        if type_:
            q = q.where(webhook_events.c.type == type_)
        with self.engine.connect() as db:
            return [dict(r._mapping) for r in db.execute(q)]

    def key_deletes(self, api_key_id: str) -> int:
        return self.proxy.count("DELETE", f"/keys/{api_key_id}")

    def assert_each_event_delivered_once(self) -> None:
        seen = Counter(h["webhook-id"] for h, _ in self.receiver.requests)
        assert [i for i, n in seen.items() if n > 1] == [], "a webhook was delivered twice"
        assert set(seen) == {e["id"] for e in self.events()}, "an event was never delivered"


@pytest.fixture
def site(db_url, dgemu, tmp_path):
    s = Site(db_url, dgemu, tmp_path)
    yield s
    s.close()


def test_workers_and_syncs_at_once_with_traffic_arriving(site, db_url):
    """Workers looping and CLI syncs started together, while records keep arriving at dgemu."""
    now = datetime.now(UTC)
    (main_id, (main_pid, _)), (other_id, (other_pid, other_key)) = site.projects.items()
    before = 0
    for cid, pid, key, seed in ((main_id, main_pid, None, 1), (other_id, other_pid, other_key, 2)):
        keys = [*site.keys[cid], "dg-stranger"]
        reqs = make_requests(300, keys=keys, start=now - timedelta(minutes=90), end=now, seed=seed)
        before += inject(site.dgemu, reqs, project_id=pid, key=key)
    # acme's budget: 100 minutes (0.43 USD) now, 240 more (1.032 USD) while the fleet runs.
    BudgetService(site.rt).set("acme", limit="1.00", action="revoke")
    acme_keys = [site.issued[("acme", con)].key.api_key_id for con in ("main", "second")]
    acme_key = acme_keys[0]
    inject_minutes(site.dgemu, acme_key, 100)
    already = {
        cid: {r["request_id"] for r in dgemu_requests(site.dgemu, project_id=pid, key=key)}
        for cid, (pid, key) in site.projects.items()
    }

    stop = threading.Event()
    arrived: list[int] = []

    def traffic() -> None:
        rnd = random.Random(7)
        i = 0
        while not stop.is_set():
            t = datetime.now(UTC)
            cid, pid, key = rnd.choice([(main_id, main_pid, None), (other_id, other_pid, other_key)])
            reqs = make_requests(15, keys=site.keys[cid], start=t - timedelta(seconds=20), end=t, seed=i)
            arrived.append(inject(site.dgemu, reqs, project_id=pid, key=key))
            if i == 1:  # acme crosses its cap while the fleet runs
                inject_minutes(site.dgemu, acme_key, 240)
                arrived.append(10)
            i += 1
            stop.wait(0.4)

    workers = fleet_size(db_url, 3, 1)
    started = datetime.now(UTC)
    injector = threading.Thread(target=traffic)
    for _ in range(workers):
        site.fleet.start("worker", "--max-seconds", "6")
    site.fleet.start("sync", "--json")
    site.fleet.start("sync", "--connection", "second", "--json")
    injector.start()
    time.sleep(3)
    site.fleet.start("sync", "--connection", "main", "--json")
    if db_url.startswith("postgresql"):
        site.fleet.start("budgets", "check", "--json")
    time.sleep(2)
    stop.set()
    injector.join(30)
    results = site.fleet.wait(timeout=180)
    ended = datetime.now(UTC)
    assert_all_ok(results)
    assert len(arrived) > 2, "the traffic thread barely ran"

    # Everything that was there before the fleet started is in the ledger, once, without another sync.
    assert sum(len(ids) for ids in already.values()) == before + 10
    for cid, ids in already.items():
        ours = Counter(r["request_id"] for r in ledger_rows(site.engine, cid))
        assert ids <= set(ours) and max(ours.values()) == 1
    assert_sync_state_sane(site.engine, started, ended)

    # A quiet sync afterwards catches what arrived last; then the ledger is exactly dgemu's log.
    site.cli("sync", "--json")
    total = assert_ledger_is_dgemu(site.engine, site.dgemu, site.projects)
    assert total == before + 10 + sum(arrived)
    assert_sync_state_sane(site.engine, started, datetime.now(UTC))

    # The budget crossed during the run: one suspension, the key deleted at Deepgram exactly once.
    assert [site.key_deletes(k) for k in acme_keys] == [1, 1]
    assert len(site.events("customer.suspended")) == 1 and len(site.events("key.revoked")) == 2
    thresholds = [e["payload"]["threshold"] for e in site.events("budget.threshold_reached")]
    assert sorted(thresholds) == [50, 80, 100]
    other_keys = [k.key.api_key_id for (ext, _), k in site.issued.items() if ext != "acme"]
    assert sum(site.key_deletes(k) for k in other_keys) == 0
    site.assert_each_event_delivered_once()


def test_budget_evaluations_racing_revoke_once(site, db_url):
    """Several processes evaluate the same breached budget at once (``budgets check`` and ``sync``,
    which also delivers webhooks): one revocation at Deepgram, one event per threshold, no webhook twice."""
    acme_keys = [site.issued[("acme", con)].key.api_key_id for con in ("main", "second")]
    inject_minutes(site.dgemu, acme_keys[0], 240)  # 1.032 USD
    site.cli("sync", "--since", month_start(datetime.now(UTC)).isoformat(), "--json")
    BudgetService(site.rt).set("acme", limit="1.00", action="revoke")  # over the cap, not evaluated yet
    n = fleet_size(db_url, 2, 1)
    for _ in range(n):
        site.fleet.start("budgets", "check", "--json")
        site.fleet.start("sync", "--json")
    results = site.fleet.wait(timeout=150)
    assert_all_ok(results)
    site.cli("sync", "--json")  # a quiet pass delivers whatever is still due

    assert [site.key_deletes(k) for k in acme_keys] == [1, 1]
    assert len(site.events("customer.suspended")) == 1
    assert sorted(e["payload"]["key_id"] for e in site.events("key.revoked")) == sorted(
        site.issued[("acme", con)].key.id for con in ("main", "second")
    )
    assert sorted(e["payload"]["threshold"] for e in site.events("budget.threshold_reached")) == [50, 80, 100]
    with site.engine.connect() as db:
        revokes = db.execute(
            select(func.count()).select_from(key_operations).where(key_operations.c.kind == "revoke")
        ).scalar_one()
        state = db.execute(select(budget_periods.c.state)).scalar_one()
    assert revokes == 2 and state == "revoked"
    checks = [json.loads(out) for args, _, out, _ in results if args[0] == "budgets"]
    assert sum(len(rows) for rows in checks) == n  # every check evaluated acme
    site.assert_each_event_delivered_once()


def drafts_for(engine, n: int) -> tuple[World, dict[str, Decimal]]:
    """``n`` customers (in three time zones) with January usage and a draft each; returns draft totals."""
    w = World(engine)
    for i in range(n):
        c = w.customer(f"c{i:02d}", tz=random.Random(i).choice(["UTC", "America/New_York", "Asia/Kolkata"]))
        w.usage(c, datetime(2026, 1, 14, 12, tzinfo=UTC), minutes=str(i + 1))
    drafts = {e.invoice_id: e.total for e in w.service.run("2026-01").entries}
    assert len(drafts) == n
    return w, drafts


FINALIZE = ("invoices", "run", "--period", "2026-01", "--finalize", "--json")


def test_two_finalizers_finalize_each_invoice_once(db_url, engine, tmp_path):
    """Two processes run and finalize the same month's drafts at once (then, as an operator would after
    an error, once more): each invoice is finalized once, numbers unique and gapless, one
    ``invoice.finalized`` event each, totals as drafted."""
    _, drafts = drafts_for(engine, fleet_size(db_url, 24, 12))
    fleet = Fleet(cli_env(db_url, generate_key(), tmp_path), tmp_path)
    fleet.start(*FINALIZE)
    fleet.start(*FINALIZE)
    # Both succeed: a draft the other process finalized first is reported unchanged, not an error.
    assert_all_ok(fleet.wait(timeout=150))
    fleet.start(*FINALIZE)
    assert_all_ok(fleet.wait())

    with engine.connect() as db:
        rows = db.execute(select(invoices)).mappings().all()
        audits = Counter(
            db.execute(select(audit_log.c.subject).where(audit_log.c.action == "invoice.finalized")).scalars()
        )
    assert {r["id"]: r["total"] for r in rows} == drafts  # the same invoices, totals unchanged
    assert {r["status"] for r in rows} == {"finalized"}
    numbers = sorted(r["number"] for r in rows)
    prefix = numbers[0].rsplit("-", 1)[0]
    assert numbers == [f"{prefix}-{i:06d}" for i in range(1, len(drafts) + 1)]
    assert audits == Counter(drafts.keys())  # finalized once each
    events = _events(engine, "invoice.finalized")
    assert Counter(e["payload"]["invoice_id"] for e in events) == Counter(drafts.keys())
    assert {e["payload"]["invoice_id"]: Decimal(e["payload"]["total"]) for e in events} == drafts


def test_racing_invoice_runs_both_succeed_and_never_touch_a_finalized_invoice(db_url, engine, tmp_path):
    """Deterministic on PostgreSQL: the test holds the first customer's row lock until both runs wait on
    it, so both build that customer's draft back to back, then both try to finalize it."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the interleaving is forced with a PostgreSQL row lock (SQLite has none)")
    _, drafts = drafts_for(engine, 3)
    fleet = Fleet(cli_env(db_url, generate_key(), tmp_path), tmp_path)
    with engine.connect() as holder:
        tx = holder.begin()
        holder.execute(select(customers).where(customers.c.external_id == "c00").with_for_update())
        procs = [fleet.start(*FINALIZE), fleet.start(*FINALIZE)]
        waiting = wait_for_lock_waiters(engine, 2, alive=lambda: all(p.poll() is None for p in procs))
        tx.rollback()
    results = fleet.wait(timeout=120)
    if waiting < 2:
        raise RuntimeError(f"the two runs never both waited on the lock: {results}")
    with engine.connect() as db:
        log = db.execute(
            select(audit_log.c.subject, audit_log.c.action)
            .where(audit_log.c.action.like("invoice.%"))
            .order_by(audit_log.c.at)
        ).all()
    finalized: set[str] = set()
    touched_after = []
    for subject, action in log:
        if action == "invoice.finalized":
            finalized.add(subject)
        elif subject in finalized:
            touched_after.append((subject, action))
    assert touched_after == []  # a finalized invoice is never rebuilt
    assert [rc for _, rc, _, _ in results] == [0, 0], [err for *_, err in results]
    assert len(finalized) == len(drafts)


def wait_for_lock_waiters(engine, n: int, alive=lambda: True, seconds: float = 60) -> int:  # float-ok
    """Poll PostgreSQL until ``n`` sessions of this database wait on a lock (or time runs out, or
    ``alive()`` turns false); returns how many wait."""
    deadline = time.monotonic() + seconds
    waiting = 0
    while waiting < n and time.monotonic() < deadline and alive():
        time.sleep(0.05)
        with engine.connect() as probe:
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
    return waiting


def test_a_rebuild_racing_a_finalize_never_changes_the_finalized_invoice(db_url, engine):
    """Deterministic on PostgreSQL: the test holds the number counter's row so the finalize stops midway
    (invoice row locked, not committed); a record arrives; a rebuild of the period starts and must wait
    for the finalize, then leave the finalized invoice alone (its content, its claims, its event)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the interleaving is forced with PostgreSQL row locks (SQLite has none)")
    w = World(engine)
    c = w.customer("solo")
    w.usage(c, datetime(2026, 1, 14, 12, tzinfo=UTC), minutes="10")
    [entry] = w.service.run("2026-01", customer=c).entries
    with engine.begin() as db:
        db.execute(number_counters.insert().values(name="INV-2026", value=0))
    results: dict[str, object] = {}

    def call(name: str, fn) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = fn()
            except Exception as exc:  # noqa: BLE001 - reported below
                results[name] = exc

        t = threading.Thread(target=run)
        t.start()
        return t

    with engine.connect() as holder:
        tx = holder.begin()
        holder.execute(select(number_counters).with_for_update())
        finalizer = call("finalize", lambda: InvoiceService(engine, w.clock).finalize(entry.invoice_id))
        if wait_for_lock_waiters(engine, 1) < 1:
            raise RuntimeError("the finalize never waited on the counter")
        w.usage(c, datetime(2026, 1, 20, 12, tzinfo=UTC), minutes="5")  # arrives meanwhile
        rebuild = call("rebuild", lambda: InvoiceService(engine, w.clock).run("2026-01", customer=c))
        waiting = wait_for_lock_waiters(engine, 2, alive=rebuild.is_alive, seconds=20)
        tx.rollback()
    finalizer.join(60)
    rebuild.join(60)
    if isinstance(results.get("finalize"), Exception) or "finalize" not in results:
        raise RuntimeError(f"the finalize failed: {results}")
    doc = w.service.get(entry.invoice_id)
    [event] = _events(engine, "invoice.finalized")
    assert waiting == 2  # the rebuild did wait for the finalize
    assert [e.outcome for e in results["rebuild"].entries] == ["unchanged"]
    assert doc["status"] == "finalized" and doc["number"] == results["finalize"]["number"]
    assert Decimal(doc["total"]) == Decimal(event["payload"]["total"]) == results["finalize"]["total"]
    assert [x["quantity"] for x in doc["lines"] if x["kind"] == "usage"] == ["10"]  # not the late 5
    with engine.connect() as db:
        claimed = len(invoice_store.claimed_records(db))
    assert claimed == 1  # the record that arrived meanwhile waits for the next invoice, as late usage


def _events(engine, type_: str) -> list[dict]:
    with engine.connect() as db:
        q = select(webhook_events).where(webhook_events.c.type == type_)
        return [dict(r._mapping) for r in db.execute(q)]


def test_worker_max_seconds_bounds_the_loop(db_url, tmp_path):
    """The bounded run the fleets above rely on: ``--max-seconds N`` stops cleanly; bad values are one
    line, exit 1."""
    if not db_url.startswith("sqlite"):
        pytest.skip("a CLI contract, the same on both databases (the fleets above run it on PostgreSQL)")
    fleet = Fleet(cli_env(db_url, generate_key(), tmp_path), tmp_path)
    fleet.start("worker", "--max-seconds", "0")
    fleet.start("worker", "--max-seconds", "2")
    [(_, bad_rc, bad_out, bad_err), (_, rc, out, err)] = fleet.wait(timeout=60)
    assert (bad_rc, bad_out, bad_err.strip()) == (1, "", "error: --max-seconds must be at least 1, got 0")
    assert rc == 0 and "started" in out, err
    cycles = int(err.strip().rsplit("after ", 1)[1].split()[0])
    assert 1 <= cycles <= 3, err  # a cycle, then a second one poll_seconds later, then the deadline
