"""ByoService against dgemu (two projects: the operator's and the customer's own), on SQLite and
PostgreSQL: what is verified, what is stored, what is refused, and that a failure leaves nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from keyledger.bootstrap import Runtime
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.core.errors import Conflict, Invalid, NotFound
from keyledger.customers.byo import ByoService
from keyledger.customers.service import ConnectionService, CustomerService, connection_key_ad
from keyledger.db.tables_customers import connections
from keyledger.usage.service import SyncService, reconcile
from tests.usage_support import inject


@pytest.fixture
def runtime(db_url, dgemu):
    rt = Runtime(
        settings=Settings(database_url=db_url, secret_key=generate_key(), provider_max_retries=1,
                          sync_settle_seconds=0),
        environ={"DEEPGRAM_API_KEY": dgemu.owner_key},
    )
    ConnectionService(rt, environ=rt.environ).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url
    )
    yield rt
    rt.engine.dispose()


@pytest.fixture
def own(dgemu) -> dict:
    with dgemu.client() as c:
        r = c.post("/_emulator/projects", json={"name": "customer's own"})
        r.raise_for_status()
        return r.json()


def project_keys(dgemu, project: dict) -> list[dict]:
    with dgemu.client(project["owner_key"]) as c:
        return [e["api_key"] for e in c.get(f"/v1/projects/{project['project_id']}/keys").json()["api_keys"]]


def byo_rows(rt) -> list:
    with rt.engine.connect() as db:
        return db.execute(select(connections).where(connections.c.kind == "byo")).all()


def test_connect_stores_only_the_minted_key_encrypted(runtime, dgemu, own):
    cust = CustomerService(runtime).add("Acme", external_id="acme")
    result = ByoService(runtime, actor="tests").connect("acme", project_id=own["project_id"],
                                                        api_key=own["owner_key"])
    assert result.customer.billing_mode == "byo"
    [row] = byo_rows(runtime)
    assert (row.customer_id, row.project_id, row.status, row.api_key_env) == (
        cust.id, own["project_id"], "active", None)
    minted_secret = runtime.cipher.decrypt(row.api_key_ciphertext, connection_key_ad(row.id))
    assert minted_secret != own["owner_key"]
    [minted] = [k for k in project_keys(dgemu, own) if k["api_key_id"] == result.api_key_id]
    assert sorted(minted["scopes"]) == ["usage:read", "usage:write"]
    # the stored key reads the customer's usage: a sync of the BYO connection works with it alone
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    inject(dgemu, [{"api_key_id": "theirs", "created": at, "endpoint": "speak", "method": "sync",
                    "model": "aura-2-thalia-en", "characters": 500}],
           project_id=own["project_id"], key=own["owner_key"])
    svc = SyncService(engine=runtime.engine, settings=runtime.settings, clock=runtime.clock,
                      open_provider=lambda c: runtime.provider_for(c.id))
    runs = {r.connection: r for r in svc.sync(since=datetime.now(UTC) - timedelta(days=1))}
    assert (runs[row.name].inserted, runs[row.name].unattributed) == (1, 0)
    with runtime.engine.connect() as db:
        owners = db.execute(text("SELECT customer_id FROM usage_daily WHERE connection_id = :c"),
                            {"c": row.id}).scalars().all()
    assert owners == [cust.id]
    # reconciliation covers the operator's bill only
    result = reconcile(runtime.engine, open_provider=lambda c: runtime.provider_for(c.id),
                       period=datetime.now(UTC).strftime("%Y-%m"), connection=None)
    assert result["connection"] == "main" and result["unattributed_usd"] == 0
    with pytest.raises(Invalid, match="BYO"):
        reconcile(runtime.engine, open_provider=lambda c: runtime.provider_for(c.id), period="2026-01",
                  connection=row.name)


def test_refusals_leave_nothing_behind(runtime, dgemu, own):
    CustomerService(runtime).add("Acme", external_id="acme")
    byo = ByoService(runtime, actor="tests")
    before = len(project_keys(dgemu, own))
    with pytest.raises(Invalid, match="refused the key"):
        byo.connect("acme", project_id=own["project_id"], api_key="wrong-key-" + "0" * 30)
    with pytest.raises(Invalid, match="refused the key"):  # a real key of another project
        byo.connect("acme", project_id=own["project_id"], api_key=dgemu.owner_key)
    # a key that may read keys but not create them
    with dgemu.client(own["owner_key"]) as c:
        reader = c.post(f"/v1/projects/{own['project_id']}/keys",
                        json={"comment": "reader", "scopes": ["keys:read"]}).json()["key"]
    with pytest.raises(Invalid, match="cannot create keys"):
        byo.connect("acme", project_id=own["project_id"], api_key=reader)
    with pytest.raises(NotFound):
        byo.connect("nobody", project_id=own["project_id"], api_key=own["owner_key"])
    with pytest.raises(Invalid):
        byo.connect("acme", project_id=" ", api_key=own["owner_key"])
    with pytest.raises(Conflict, match="no Deepgram account"):
        byo.disconnect("acme")
    assert byo_rows(runtime) == []
    assert len(project_keys(dgemu, own)) == before + 1  # only the reader key the test made
    assert CustomerService(runtime).get("acme").billing_mode == "managed"


def test_disconnect_without_a_key_says_which_key_is_left(runtime, dgemu, own):
    CustomerService(runtime).add("Acme", external_id="acme")
    byo = ByoService(runtime, actor="tests")
    connected = byo.connect("acme", project_id=own["project_id"], api_key=own["owner_key"])
    done = byo.disconnect("acme")
    # a usage-only key may not delete keys: keyledger forgets it and reports it for the customer to delete
    assert done.minted_key_deleted is False and done.api_key_id == connected.api_key_id
    assert done.customer.billing_mode == "managed"
    [row] = byo_rows(runtime)
    assert row.status == "disconnected" and row.api_key_ciphertext is None
    # connect again: a new connection, a new minted key
    again = byo.connect("acme", project_id=own["project_id"], api_key=own["owner_key"])
    assert again.connection_id != connected.connection_id
    done = byo.disconnect("acme", api_key=own["owner_key"])
    assert done.minted_key_deleted is True
    assert again.api_key_id not in {k["api_key_id"] for k in project_keys(dgemu, own)}
