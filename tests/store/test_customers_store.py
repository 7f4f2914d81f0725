"""The customers store on SQLite and PostgreSQL: lookups by id or external id, uniqueness, keys and
their owners (revoked keys stay attributed), key operations, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyledger.core.errors import Conflict, NotFound
from keyledger.customers import store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def customer_values(cid="cus_1", ext="acme", **kw):
    return {
        "id": cid,
        "external_id": ext,
        "name": kw.get("name", "Acme"),
        "email": None,
        "plan": None,
        "currency": "USD",
        "timezone": "UTC",
        "status": "active",
        "billing_mode": "managed",
        "created_at": T0,
        "updated_at": T0,
    }


def connection_values(cid="con_1", name="main"):
    return {
        "id": cid,
        "name": name,
        "kind": "managed",
        "project_id": "p1",
        "base_url": "http://dg",
        "api_key_env": "DEEPGRAM_API_KEY",
        "api_key_ciphertext": None,
        "customer_id": None,
        "status": "active",
        "created_at": T0,
    }


def key_values(kid="key_1", api_key_id="dg-1", op="op_1", customer="cus_1", connection="con_1"):
    return {
        "id": kid,
        "customer_id": customer,
        "connection_id": connection,
        "api_key_id": api_key_id,
        "secret_ciphertext": b"\x01\x08abcdefgh" + b"x" * 40,
        "comment": "c [op:op_1]",
        "scopes": ["usage:write"],
        "tags": ["keyledger", "customer:acme", f"op:{op}"],
        "operation_id": op,
        "status": "active",
        "created_at": T0,
        "expires_at": T0 + timedelta(days=90),
        "revoked_at": None,
    }


def test_customer_by_id_or_external_id_and_duplicates(engine):
    with engine.begin() as db:
        c = store.insert_customer(db, customer_values())
        assert c.created_at == T0 and c.created_at.tzinfo is not None
        assert store.get_customer(db, "cus_1") == c
        assert store.get_customer(db, "acme") == c
        with pytest.raises(Conflict, match="acme"):
            store.insert_customer(db, customer_values(cid="cus_2"))
        with pytest.raises(NotFound, match="nope"):
            store.get_customer(db, "nope")
    with engine.begin() as db:  # the failed insert did not poison the transaction or leave a row
        assert [x.id for x in store.list_customers(db)] == ["cus_1"]


def test_update_refuses_an_external_id_taken_by_another(engine):
    with engine.begin() as db:
        store.insert_customer(db, customer_values())
        store.insert_customer(db, customer_values(cid="cus_2", ext="globex"))
        with pytest.raises(Conflict):
            store.update_customer(db, "cus_2", {"external_id": "acme"})
        updated = store.update_customer(db, "cus_2", {"name": "Globex Corp", "status": "suspended"})
        assert updated.name == "Globex Corp" and updated.status == "suspended"
        assert [c.id for c in store.list_customers(db, status="suspended")] == ["cus_2"]


def test_connections_and_the_default_one(engine):
    with engine.begin() as db:
        with pytest.raises(NotFound, match="no connection"):
            store.default_managed_connection(db)
        store.insert_connection(db, connection_values())
        assert store.default_managed_connection(db).name == "main"
        assert store.get_connection(db, "main").id == "con_1"
        with pytest.raises(Conflict):
            store.insert_connection(db, connection_values(cid="con_2"))
        store.insert_connection(db, connection_values(cid="con_2", name="eu"))
        with pytest.raises(NotFound, match="--connection"):
            store.default_managed_connection(db)


def test_keys_owners_include_revoked_keys(engine):
    with engine.begin() as db:
        store.insert_customer(db, customer_values())
        store.insert_connection(db, connection_values())
        k1 = store.insert_key(db, key_values())
        store.insert_key(db, key_values(kid="key_2", api_key_id="dg-2", op="op_2"))
        assert k1.connection == "main" and k1.scopes == ("usage:write",) and k1.has_secret
        assert store.find_key(db, "dg-1").id == "key_1"
        assert store.key_by_operation(db, "op_2").id == "key_2"
        store.mark_key_revoked(db, "key_1", T0 + timedelta(days=1))
        store.mark_key_revoked(db, "key_1", T0 + timedelta(days=2))  # second revoke changes nothing
    with engine.begin() as db:
        k1 = store.get_key(db, "key_1")
        assert k1.status == "revoked" and k1.revoked_at == T0 + timedelta(days=1)
        assert store.key_owners(db, "con_1") == {"dg-1": ("key_1", "cus_1"), "dg-2": ("key_2", "cus_1")}
        assert [k.id for k in store.list_keys(db, customer_id="cus_1", status="active")] == ["key_2"]
        assert {r.id for r in store.key_secrets(db)} == {"key_1", "key_2"}


def test_the_same_deepgram_key_cannot_be_recorded_twice(engine):
    from sqlalchemy.exc import IntegrityError

    with engine.begin() as db:
        store.insert_customer(db, customer_values())
        store.insert_connection(db, connection_values())
        store.insert_key(db, key_values())
    with pytest.raises(IntegrityError), engine.begin() as db:
        store.insert_key(db, key_values(kid="key_2", op="op_2"))  # same api_key_id on the same connection
    with pytest.raises(IntegrityError), engine.begin() as db:
        store.insert_key(db, key_values(kid="key_3", api_key_id="dg-3"))  # same operation id


def test_key_operations_pending_then_finished(engine):
    with engine.begin() as db:
        op = store.insert_operation(
            db,
            {
                "id": "op_1",
                "kind": "create",
                "customer_id": "cus_1",
                "connection_id": "con_1",
                "key_id": None,
                "state": "pending",
                "request": {"scopes": ["usage:write"], "expires_at": None},
                "created_at": T0,
            },
        )
        assert op["request"] == {"scopes": ["usage:write"], "expires_at": None}
        assert [o["id"] for o in store.pending_operations(db, kind="create", customer_id="cus_1")] == ["op_1"]
        store.finish_operation(db, "op_1", state="done", at=T0, key_id="key_1")
    with engine.begin() as db:
        assert store.pending_operations(db) == []
        done = store.get_operation(db, "op_1")
        assert done["state"] == "done" and done["key_id"] == "key_1" and done["finished_at"] == T0


def test_audit_log_rows(engine):
    with engine.begin() as db:
        store.write_audit(db, at=T0, actor="cli", action="customer.create", subject="cus_1", details={"a": 1})
        store.write_audit(
            db, at=T0 + timedelta(seconds=1), actor="cli", action="customer.update", subject="cus_1"
        )
    with engine.begin() as db:
        rows = store.list_audit(db, subject="cus_1")
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("cli", "customer.create"),
        ("cli", "customer.update"),
    ]
    assert rows[0]["details"] == {"a": 1} and rows[0]["at"] == T0
