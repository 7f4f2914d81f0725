"""Sync against a real dgemu over HTTP, on SQLite and PostgreSQL: the ledger ends holding exactly dgemu's
records (nothing lost, nothing twice), rollups equal a recomputation, late records, paging while records
arrive, 429/5xx storms, a persistent failure, the lease."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from keyledger.core.clock import SystemClock
from keyledger.core.config import Settings
from keyledger.core.errors import ProviderError
from keyledger.db.tables_usage import sync_runs, sync_state
from keyledger.provider.deepgram import DeepgramProvider
from keyledger.provider.port import ProviderCredentials
from keyledger.usage import store
from keyledger.usage.service import SyncService
from tests.usage_support import (
    add_connection,
    add_customer,
    add_key,
    dgemu_requests,
    faults,
    inject,
    ledger_rows,
    make_requests,
    recomputed_rollups,
    rollups,
)


@pytest.fixture
def setup(engine, dgemu):
    add_connection(engine, base_url=dgemu.base_url, project_id=dgemu.project_id)
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b", status="revoked")
    return engine, dgemu


def service(engine, dgemu, **overrides) -> SyncService:
    settings = Settings(
        **{"sync_settle_seconds": 0, "sync_lookback_seconds": 3600, "sync_window_days": 2, **overrides}
    )

    def open_provider(_connection):
        return DeepgramProvider(
            ProviderCredentials(dgemu.base_url, dgemu.project_id, dgemu.owner_key),
            max_retries=settings.provider_max_retries,
            backoff_base=0.01,
            backoff_cap=0.05,
        )

    return SyncService(
        engine=engine,
        settings=settings,
        clock=SystemClock(),
        open_provider=open_provider,
        lease_wait_seconds=1,
    )


def assert_ledger_equals_dgemu(engine, dgemu):
    theirs = [r["request_id"] for r in dgemu_requests(dgemu)]
    ours = [r["request_id"] for r in ledger_rows(engine)]
    assert len(ours) == len(set(ours)), "a record is in the ledger twice"
    assert set(ours) == set(theirs), (
        f"missing {len(set(theirs) - set(ours))}, extra {len(set(ours) - set(theirs))}"
    )
    assert rollups(engine) == recomputed_rollups(engine)


def now() -> datetime:
    return datetime.now(UTC)


def test_full_sync_is_exact_then_idempotent(setup):
    engine, dgemu = setup
    reqs = make_requests(
        2600, keys=["dg-a", "dg-b", "dg-x"], start=now() - timedelta(days=5), end=now() - timedelta(minutes=5)
    )
    assert inject(dgemu, reqs) == 2600
    svc = service(engine, dgemu)
    [run] = svc.sync()
    assert (run.fetched, run.inserted, run.duplicates) == (2600, 2600, 0)
    assert run.unattributed == sum(1 for r in reqs if r["api_key_id"] == "dg-x")
    # calls: billing/fields + per window (its pages, the last one short)
    assert run.api_calls <= 1 + -(-2600 // 1000) + run.windows
    assert_ledger_equals_dgemu(engine, dgemu)
    by_id = {r["request_id"]: r for r in ledger_rows(engine)}
    theirs = {r["request_id"]: r for r in dgemu_requests(dgemu)}
    for rid, r in theirs.items():
        assert by_id[rid]["cost_usd"] == r["response"]["details"]["usd"]
        expected = {"dg-a": "cus_a", "dg-b": "cus_b"}.get(r["api_key_id"])
        assert by_id[rid]["customer_id"] == expected
    [again] = svc.sync()
    assert again.inserted == 0 and again.fetched > 0 and again.duplicates == again.fetched
    assert_ledger_equals_dgemu(engine, dgemu)
    with engine.connect() as conn:
        runs = conn.execute(select(sync_runs).order_by(sync_runs.c.started_at)).mappings().all()
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[0]["inserted"] == 2600 and runs[0]["api_calls"] == run.api_calls


def test_late_records_are_caught_by_the_lookback(setup):
    engine, dgemu = setup
    inject(dgemu, make_requests(300, keys=["dg-a"], start=now() - timedelta(days=1), end=now()))
    svc = service(engine, dgemu, sync_lookback_seconds=2 * 3600)
    svc.sync()
    # records that show up now but happened before the watermark (within the look-back)
    late = make_requests(
        50,
        keys=["dg-a", "dg-b"],
        start=now() - timedelta(minutes=90),
        end=now() - timedelta(minutes=1),
        seed=7,
    )
    inject(dgemu, late)
    [run] = svc.sync()
    assert run.inserted == 50
    assert_ledger_equals_dgemu(engine, dgemu)


class InjectingProvider:
    """The real Deepgram adapter, with new records written to dgemu after every page it fetches — inside
    the window being paged (late), before it (older) and after it (newer) — so pages shift under us. The
    records go in right after each HTTP fetch (on the adapter's page-reader thread), so reading ahead of
    the caller cannot outrun them."""

    def __init__(self, inner, dgemu, window_start, window_end):
        self.inner, self.dgemu = inner, dgemu
        self.http = inner.http
        self.lo, self.hi = window_start, window_end
        self.injected: list[dict] = []
        self.rnd = random.Random(3)
        fetch = inner._requests_body

        def fetch_then_inject(*args, **kwargs):
            body = fetch(*args, **kwargs)
            batch = make_requests(
                40, keys=["dg-a"], start=self.lo, end=self.hi, seed=self.rnd.randint(0, 10**6)
            )
            inject(self.dgemu, batch)
            self.injected.extend(batch)
            return body

        inner._requests_body = fetch_then_inject

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_paging_while_records_arrive_neither_skips_nor_duplicates(setup):
    engine, dgemu = setup
    lo, hi = now() - timedelta(hours=30), now() - timedelta(minutes=10)
    inject(dgemu, make_requests(3500, keys=["dg-a", "dg-b"], start=lo, end=hi))
    before = {r["request_id"] for r in dgemu_requests(dgemu)}
    svc = service(engine, dgemu, sync_page_limit=500, sync_lookback_seconds=2 * 86400)
    inner_open = svc.open_provider
    wrappers = []

    def open_injecting(c):
        w = InjectingProvider(inner_open(c), dgemu, lo, hi)
        wrappers.append(w)
        return w

    svc.open_provider = open_injecting
    [run] = svc.sync()
    ours = {r["request_id"] for r in ledger_rows(engine)}
    assert before <= ours, f"skipped {len(before - ours)} records that existed before the sync began"
    assert run.duplicates > 0  # pages shifted: some records were read twice and deduped
    assert len(ours) == run.inserted
    # the records that arrived during the run are caught by the next run's look-back
    svc.open_provider = inner_open
    svc.sync()
    assert_ledger_equals_dgemu(engine, dgemu)


def test_rate_limit_and_error_storm_still_exact(setup):
    engine, dgemu = setup
    inject(
        dgemu, make_requests(2100, keys=["dg-a", "dg-b", "dg-x"], start=now() - timedelta(days=3), end=now())
    )
    faults(dgemu, rate_limit_rate=0.3, error_rate=0.2, retry_after_seconds=0)
    svc = service(engine, dgemu, provider_max_retries=12, sync_page_limit=300)
    [run] = svc.sync()
    faults(dgemu, rate_limit_rate=0, error_rate=0)
    assert run.api_calls > 1 + -(-2100 // 300) + run.windows  # retries happened and were counted
    assert_ledger_equals_dgemu(engine, dgemu)


def test_persistent_failure_fails_the_run_and_keeps_the_watermark(setup):
    engine, dgemu = setup
    inject(dgemu, make_requests(200, keys=["dg-a"], start=now() - timedelta(days=1), end=now()))
    svc = service(engine, dgemu, provider_max_retries=1)
    svc.sync()
    with engine.connect() as conn:
        mark = store.read_state(conn, "con_1")["watermark"]
    inject(dgemu, make_requests(20, keys=["dg-a"], start=now() - timedelta(minutes=30), end=now(), seed=9))
    faults(dgemu, error_rate=1.0)
    with pytest.raises(ProviderError, match="sync of connection 'main' failed"):
        svc.sync()
    faults(dgemu, error_rate=0)
    with engine.connect() as conn:
        state = store.read_state(conn, "con_1")
        last = conn.execute(select(sync_runs).order_by(sync_runs.c.started_at.desc())).mappings().first()
    assert state["watermark"] == mark and state["lease_owner"] is None
    assert last["status"] == "failed" and "gave up" in last["error"] and last["api_calls"] >= 2
    assert len(ledger_rows(engine)) == 200
    svc.sync()
    assert_ledger_equals_dgemu(engine, dgemu)


def test_second_sync_waits_for_a_live_lease_then_skips(setup):
    engine, dgemu = setup
    with engine.begin() as conn:
        store.ensure_state(conn, "con_1", now())
        assert store.try_lease(conn, "con_1", "elsewhere|1|run_x", now(), now() + timedelta(minutes=5))
    [run] = service(engine, dgemu).sync()
    assert run.status == "skipped" and run.inserted == 0
    with engine.connect() as conn:
        assert conn.execute(select(sync_state.c.lease_owner)).scalar() == "elsewhere|1|run_x"


def test_key_without_billing_scope_still_syncs_with_known_line_items(setup):
    engine, dgemu = setup
    inject(dgemu, make_requests(300, keys=["dg-a"], start=now() - timedelta(days=1), end=now()))
    service(engine, dgemu).sync()
    with dgemu.client() as c:
        r = c.post(
            f"/v1/projects/{dgemu.project_id}/keys", json={"comment": "usage only", "scopes": ["usage:read"]}
        )
        r.raise_for_status()
        usage_only = r.json()["key"]
    inject(dgemu, make_requests(100, keys=["dg-a"], start=now() - timedelta(minutes=30), end=now(), seed=4))
    svc = service(engine, dgemu)
    svc.open_provider = lambda _c: DeepgramProvider(
        ProviderCredentials(dgemu.base_url, dgemu.project_id, usage_only), max_retries=0
    )
    [run] = svc.sync()
    assert run.status == "succeeded" and run.inserted == 100
    assert_ledger_equals_dgemu(engine, dgemu)
    items = {r["line_item"] for r in ledger_rows(engine)}
    assert "streaming::nova-3" in items and not any(i.endswith("nova-3-medical") for i in items)


def test_two_connections_each_hold_exactly_their_projects_records(setup):
    engine, dgemu = setup
    with dgemu.client() as c:
        r = c.post("/_emulator/projects", json={"name": "customer's own"})
        r.raise_for_status()
        byo = r.json()
    add_connection(
        engine,
        cid="con_2",
        name="byo",
        base_url=dgemu.base_url,
        project_id=byo["project_id"],
        kind="byo",
    )
    inject(dgemu, make_requests(700, keys=["dg-a", "dg-x"], start=now() - timedelta(days=2), end=now()))
    inject(
        dgemu,
        make_requests(450, keys=["byo-key"], start=now() - timedelta(days=2), end=now(), seed=2),
        project_id=byo["project_id"],
        key=byo["owner_key"],
    )
    settings = Settings(sync_settle_seconds=0, sync_lookback_seconds=3600)
    keys_by_project = {dgemu.project_id: dgemu.owner_key, byo["project_id"]: byo["owner_key"]}

    def open_provider(connection):
        return DeepgramProvider(
            ProviderCredentials(dgemu.base_url, connection.project_id, keys_by_project[connection.project_id])
        )

    svc = SyncService(engine=engine, settings=settings, clock=SystemClock(), open_provider=open_provider)
    runs = {r.connection: r for r in svc.sync()}
    assert (runs["main"].inserted, runs["byo"].inserted) == (700, 450)
    assert runs["byo"].unattributed == 450
    for cid, pid in (("con_1", dgemu.project_id), ("con_2", byo["project_id"])):
        theirs = {r["request_id"] for r in dgemu_requests(dgemu, project_id=pid, key=keys_by_project[pid])}
        assert {r["request_id"] for r in ledger_rows(engine, cid)} == theirs
    assert rollups(engine) == recomputed_rollups(engine)
    [only] = svc.sync(connection="byo")
    assert only.connection == "byo" and only.inserted == 0
