"""Budgets against a real dgemu over HTTP, on SQLite and PostgreSQL: the race near the cap, enforcement
through Deepgram failures, reinstatement. Usage reaches the ledger through a real sync."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_budgets import budget_periods
from keyledger.db.tables_customers import key_operations, keys
from keyledger.db.tables_notifications import webhook_events
from keyledger.usage.service import SyncService


@pytest.fixture
def runtime(db_url, dgemu):
    rt = Runtime(
        settings=Settings(
            database_url=db_url, secret_key=generate_key(), provider_max_retries=1, sync_settle_seconds=0
        ),
        environ={"DEEPGRAM_API_KEY": dgemu.owner_key},
    )
    yield rt
    rt.engine.dispose()


@pytest.fixture
def acme(runtime, dgemu):
    ConnectionService(runtime, environ=runtime.environ).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url
    )
    CustomerService(runtime).add("Acme", external_id="acme")
    return KeyService(runtime).create("acme")


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def inject_minutes(dgemu, api_key_id: str, minutes: int, *, n: int = 10) -> Decimal:
    """``n`` sync nova-3 requests totalling ``minutes`` of audio, created in this month; returns the USD."""
    now = datetime.now(UTC)
    created = max(now - timedelta(minutes=3), month_start(now) + timedelta(seconds=1))
    items = [
        {
            "api_key_id": api_key_id,
            "created": (created + timedelta(microseconds=i)).isoformat(),
            "endpoint": "listen",
            "method": "sync",
            "model": "nova-3",
            "duration_seconds": minutes * 60 // n,
        }
        for i in range(n)
    ]
    with dgemu.client() as c:
        r = c.post(f"/_emulator/projects/{dgemu.project_id}/requests", json={"requests": items})
        r.raise_for_status()
    return Decimal("0.0043") * minutes


def sync(rt) -> None:
    SyncService(rt.engine, rt.settings, rt.clock, lambda c: rt.provider_for(c.id)).sync(
        since=month_start(rt.clock.now()), until=rt.clock.now() + timedelta(seconds=1)
    )


def events(rt, type_: str | None = None) -> list[dict]:
    q = select(webhook_events).order_by(webhook_events.c.created_at)
    if type_:
        q = q.where(webhook_events.c.type == type_)
    with rt.engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(q)]


def dg_key_ids(dgemu) -> set[str]:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/keys")
        r.raise_for_status()
    return {e["api_key"]["api_key_id"] for e in r.json()["api_keys"]}


def speak(dgemu, secret: str) -> int:
    with httpx.Client(base_url=dgemu.base_url, headers={"Authorization": f"Token {secret}"}) as c:
        return c.post("/v1/speak", json={"text": "hello"}).status_code


def test_below_thresholds_nothing_fires(runtime, dgemu, acme):
    inject_minutes(dgemu, acme.key.api_key_id, 100)  # 0.43 USD
    sync(runtime)
    BudgetService(runtime).set("acme", limit="1.00", action="revoke")
    out = BudgetService(runtime).evaluate("acme")
    assert out.spent == Decimal("0.4300") and out.fired == () and out.state == "ok"
    assert events(runtime, "budget.threshold_reached") == []
    assert speak(dgemu, acme.secret) == 200


def test_thresholds_fire_once_each_as_spend_grows(runtime, dgemu, acme):
    BudgetService(runtime).set("acme", limit="1.00", thresholds="50,80,100", action="notify")
    inject_minutes(dgemu, acme.key.api_key_id, 130)  # 0.559
    sync(runtime)
    assert BudgetService(runtime).evaluate("acme").fired == (50,)
    assert BudgetService(runtime).evaluate("acme").fired == ()
    inject_minutes(dgemu, acme.key.api_key_id, 110)  # 1.032 in total
    sync(runtime)
    out = BudgetService(runtime).evaluate("acme")
    assert out.fired == (80, 100) and out.state == "exceeded"
    fired = [e["payload"]["threshold"] for e in events(runtime, "budget.threshold_reached")]
    assert fired == [50, 80, 100]
    assert events(runtime, "customer.suspended") == []  # notify only
    assert speak(dgemu, acme.secret) == 200
    row = BudgetService(runtime).list()[0]
    assert row["state"] == "exceeded" and row["spent"] == Decimal("1.0320") and row["limit"] == Decimal("1")


@pytest.mark.parametrize("concurrency", [50])
def test_budget_race_revokes_exactly_once(runtime, dgemu, acme, concurrency):
    BudgetService(runtime).set("acme", limit="1.00", action="revoke")
    inject_minutes(dgemu, acme.key.api_key_id, 240)  # 1.032 USD: over the cap
    sync(runtime)
    barrier = threading.Barrier(concurrency)
    errors: list[BaseException] = []
    outcomes = []

    def evaluate() -> None:
        try:
            barrier.wait()
            outcomes.append(BudgetService(runtime).evaluate("acme"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(outcomes) == concurrency
    assert len(events(runtime, "customer.suspended")) == 1
    assert len(events(runtime, "key.revoked")) == 1
    assert sorted(e["payload"]["threshold"] for e in events(runtime, "budget.threshold_reached")) == [
        50,
        80,
        100,
    ]
    with runtime.engine.connect() as db:
        revokes = db.execute(
            select(func.count()).select_from(key_operations).where(key_operations.c.kind == "revoke")
        ).scalar_one()
        state = db.execute(select(budget_periods.c.state)).scalar_one()
        status = db.execute(select(keys.c.status)).scalar_one()
    assert revokes == 1 and state == "revoked" and status == "revoked"
    assert sum(1 for o in outcomes if o.suspended) == 1
    assert acme.key.api_key_id not in dg_key_ids(dgemu)
    assert speak(dgemu, acme.secret) == 401  # the revoked key no longer works at Deepgram
    assert CustomerService(runtime).get("acme").status == "suspended"


def test_delete_failing_then_recovering_ends_with_key_gone(runtime, dgemu, acme):
    BudgetService(runtime).set("acme", limit="0.50", action="revoke")
    inject_minutes(dgemu, acme.key.api_key_id, 200)
    sync(runtime)
    with dgemu.client() as c:
        c.post("/_emulator/faults", json={"error_rate": 1.0}).raise_for_status()
    out = BudgetService(runtime).evaluate("acme")
    assert out.state == "revoke_pending" and out.error and out.suspended
    assert BudgetService(runtime).evaluate("acme").state == "revoke_pending"  # still failing: retried
    assert acme.key.api_key_id in dg_key_ids_unfaulted(dgemu)
    assert BudgetService(runtime).list()[0]["state"] == "revoke_pending"
    with dgemu.client() as c:
        c.post("/_emulator/faults", json={"error_rate": 0.0}).raise_for_status()
    out = BudgetService(runtime).evaluate_all()[0]
    assert out.state == "revoked" and out.revoked_keys == [acme.key.id]
    assert BudgetService(runtime).evaluate("acme").state == "revoked"
    assert acme.key.api_key_id not in dg_key_ids(dgemu)
    assert speak(dgemu, acme.secret) == 401
    assert len(events(runtime, "customer.suspended")) == 1
    assert len(events(runtime, "key.revoked")) == 1
    assert len(events(runtime, "budget.threshold_reached")) == 3


def dg_key_ids_unfaulted(dgemu) -> set[str]:
    with dgemu.client() as c:
        faults = c.get("/_emulator/faults").json()
        c.post("/_emulator/faults", json={"error_rate": 0.0}).raise_for_status()
        try:
            return dg_key_ids(dgemu)
        finally:
            c.post("/_emulator/faults", json={"error_rate": faults["error_rate"]}).raise_for_status()


def test_reinstate_creates_new_keys_and_does_not_revoke_again(runtime, dgemu, acme):
    BudgetService(runtime).set("acme", limit="0.50", action="revoke")
    inject_minutes(dgemu, acme.key.api_key_id, 200)
    sync(runtime)
    assert BudgetService(runtime).evaluate("acme").state == "revoked"
    customer, issued = CustomerService(runtime).reinstate("acme")
    assert customer.status == "active" and len(issued) == 1
    assert speak(dgemu, issued[0].secret) == 200
    out = BudgetService(runtime).evaluate("acme")  # same period: the cap already fired
    assert out.state == "reinstated" and out.fired == ()
    assert speak(dgemu, issued[0].secret) == 200
    types = [e["type"] for e in events(runtime)]
    assert types.count("customer.reinstated") == 1 and types.count("key.created") == 2
    assert types.count("customer.suspended") == 1


def test_bad_input_changes_nothing(runtime, acme):
    from keyledger.core.errors import Invalid, NotFound

    for kwargs in (
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1", "thresholds": "50,x"},
        {"limit": "1", "action": "explode"},
        {"limit": "1", "period": "week"},
    ):
        with pytest.raises(Invalid):
            BudgetService(runtime).set("acme", **kwargs)
    with pytest.raises(NotFound):
        BudgetService(runtime).set("nobody", limit="1")
    assert BudgetService(runtime).list() == []
