"""Connections and keys against a real dgemu over HTTP (no mocks of keyledger), on SQLite and PostgreSQL.

Crash states are reproduced as a crash leaves them: a pending key operation committed in the ledger and,
at Deepgram, either nothing or a key carrying the operation's tag.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from keyledger.bootstrap import Runtime
from keyledger.core.config import Settings
from keyledger.core.crypto import Cipher, generate_key
from keyledger.core.errors import Conflict, Invalid, NotFound, ProviderAuthError, ProviderError
from keyledger.customers import store
from keyledger.customers.at_rest import decrypt_everything
from keyledger.customers.secrets import reencrypt_all
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_customers import connections, key_operations, keys


@pytest.fixture
def runtime(db_url, dgemu):
    rt = Runtime(
        settings=Settings(database_url=db_url, secret_key=generate_key(), provider_max_retries=1),
        environ={"DEEPGRAM_API_KEY": dgemu.owner_key},
    )
    yield rt
    rt.engine.dispose()


def dg_keys(dgemu) -> list[dict]:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/keys")
        r.raise_for_status()
    return [e["api_key"] for e in r.json()["api_keys"]]


def customer_keys(dgemu, external_id: str) -> list[dict]:
    return [k for k in dg_keys(dgemu) if f"customer:{external_id}" in k.get("tags", [])]


def dg_create_key(dgemu, scopes, tags=(), comment="test") -> dict:
    with dgemu.client() as c:
        r = c.post(
            f"/v1/projects/{dgemu.project_id}/keys", json={"comment": comment, "scopes": scopes, "tags": tags}
        )
        r.raise_for_status()
        return r.json()


def speak(dgemu, secret: str) -> int:
    with dgemu.client(secret) as c:
        return c.post("/v1/speak", json={"text": "hello"}).status_code


@pytest.fixture
def ready(runtime, dgemu):
    ConnectionService(runtime, environ=runtime.environ).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url
    )
    CustomerService(runtime).add("Acme", external_id="acme")
    return runtime


# ---------------------------------------------------------------------------- connections


def test_connection_is_verified_and_leaves_no_probe_key(runtime, dgemu):
    before = {k["api_key_id"] for k in dg_keys(dgemu)}
    conn = ConnectionService(runtime, environ=runtime.environ).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url, store_key=True
    )
    assert conn.has_stored_key and conn.api_key_env is None
    assert {k["api_key_id"] for k in dg_keys(dgemu)} == before
    with runtime.engine.connect() as db:
        blob = db.execute(select(connections.c.api_key_ciphertext)).scalar_one()
    assert dgemu.owner_key.encode() not in blob
    provider = runtime.provider_for("main")  # decrypts the stored key
    try:
        assert provider.verify_access().missing == ()
    finally:
        provider.close()


@pytest.mark.parametrize(
    ("scopes", "error", "match"),
    [
        (["member"], Invalid, "billing:read"),
        (["usage:write"], ProviderAuthError, "refused"),
    ],
)
def test_connection_with_a_weak_key_is_refused_and_nothing_written(runtime, dgemu, scopes, error, match):
    weak = dg_create_key(dgemu, scopes)["key"]
    service = ConnectionService(runtime, environ={"DEEPGRAM_API_KEY": weak})
    with pytest.raises(error, match=match) as err:
        service.add("main", project_id=dgemu.project_id, base_url=dgemu.base_url)
    assert weak not in str(err.value)
    assert service.list() == []


def test_connection_errors_unknown_project_unreachable_missing_env(runtime, dgemu):
    service = ConnectionService(runtime, environ=runtime.environ)
    with pytest.raises(ProviderError):
        service.add("main", project_id="00000000-0000-4000-8000-00000000dead", base_url=dgemu.base_url)
    with pytest.raises(ProviderError, match="cannot reach"):
        service.add("main", project_id=dgemu.project_id, base_url="http://127.0.0.1:9")
    with pytest.raises(Invalid, match=r"\$NOPE is not set"):
        service.add("main", project_id=dgemu.project_id, api_key_env="NOPE", base_url=dgemu.base_url)
    assert service.list() == []


# ---------------------------------------------------------------------------- create


def test_create_least_privilege_tagged_key_with_expiry(ready, dgemu):
    issued = KeyService(ready).create("acme", ttl="90d", comment="prod agent")
    key = issued.key
    (dg,) = customer_keys(dgemu, "acme")
    assert dg["api_key_id"] == key.api_key_id
    assert dg["scopes"] == ["usage:write"]
    assert set(dg["tags"]) == {"keyledger", "customer:acme", f"op:{key.operation_id}"}
    assert dg["comment"].startswith("prod agent") and key.operation_id in dg["comment"]
    assert dg["expiration_date"][:10] == key.expires_at.date().isoformat()
    assert (key.expires_at - key.created_at).days in (89, 90)
    # the secret works on the data plane, and nowhere else (least privilege)
    assert speak(dgemu, issued.secret) == 200
    with dgemu.client(issued.secret) as c:
        assert c.get(f"/v1/projects/{dgemu.project_id}/keys").status_code in (401, 403)
    # stored encrypted, bound to its row
    assert KeyService(ready).secret(key.id) == issued.secret
    with ready.engine.connect() as db:
        blob = db.execute(select(keys.c.secret_ciphertext)).scalar_one()
        ops = db.execute(select(key_operations)).all()
        audit = store.list_audit(db, subject=key.id)
    assert issued.secret.encode() not in blob
    assert [(o.kind, o.state, o.key_id) for o in ops] == [("create", "done", key.id)]
    assert [a["action"] for a in audit] == ["key.create", "key.secret_read"]
    assert KeyService(ready).owner_of(key.connection_id, key.api_key_id) == (key.id, key.customer_id)


def test_bad_input_changes_nothing(ready, dgemu):
    service = KeyService(ready)
    with pytest.raises(NotFound):
        service.create("nobody")
    with pytest.raises(Invalid, match="TTL"):
        service.create("acme", ttl="forever")
    with pytest.raises(NotFound):
        service.create("acme", connection="nope")
    CustomerService(ready).suspend("acme")
    with pytest.raises(Conflict, match="suspended"):
        service.create("acme")
    with ready.engine.connect() as db:
        assert db.execute(select(key_operations)).all() == []
    assert customer_keys(dgemu, "acme") == []


def test_deepgram_refusal_marks_the_operation_failed(ready, dgemu):
    with pytest.raises(ProviderError, match="400"):
        KeyService(ready).create("acme", scopes=["no:such-scope"])
    with ready.engine.connect() as db:
        assert [o.state for o in db.execute(select(key_operations))] == ["failed"]
        assert db.execute(select(keys)).all() == []
    assert customer_keys(dgemu, "acme") == []


def _pending_op(ready) -> dict:
    """The state a crash after committing the operation (and before the key row) leaves behind."""
    service = KeyService(ready)
    with ready.engine.begin() as db:
        cust = store.get_customer(db, "acme")
        conn = store.get_connection(db, "main")
        return service._new_create_op(
            db, cust, conn, kind="create", scopes=("usage:write",), comment=None, ttl=None
        )


def test_rerun_adopts_the_key_an_interrupted_create_made(ready, dgemu):
    op = _pending_op(ready)
    req = op["request"]
    made = dg_create_key(dgemu, req["scopes"], req["tags"], req["comment"])  # Deepgram did create it
    service = KeyService(ready)
    issued = service.create("acme")
    assert issued.adopted and issued.secret is None and issued.key.api_key_id == made["api_key_id"]
    assert any("rotate" in n for n in service.notes)
    assert [k["api_key_id"] for k in customer_keys(dgemu, "acme")] == [made["api_key_id"]]
    assert [k.id for k in service.list(customer="acme")] == [issued.key.id]
    with ready.engine.connect() as db:
        assert store.get_operation(db, op["id"])["state"] == "done"
    # a usable secret comes from rotating the adopted key
    new, old = service.rotate(issued.key.id)
    assert speak(dgemu, new.secret) == 200 and old.status == "revoked"
    assert [k["api_key_id"] for k in customer_keys(dgemu, "acme")] == [new.key.api_key_id]


def test_rerun_creates_once_when_the_interrupted_create_never_reached_deepgram(ready, dgemu):
    op = _pending_op(ready)
    issued = KeyService(ready).create("acme")
    assert issued.key.operation_id == op["id"] and issued.secret
    again = KeyService(ready).create("acme")  # a new, deliberate second key
    assert again.key.operation_id != op["id"]
    assert len(customer_keys(dgemu, "acme")) == 2


# ---------------------------------------------------------------------------- rotate / revoke


def test_rotate_creates_then_deletes_and_keeps_the_old_row(ready, dgemu):
    service = KeyService(ready)
    first = service.create("acme", ttl="30d", scopes=["usage:write"])
    new, old = service.rotate(first.key.id)
    assert old.id == first.key.id and old.status == "revoked" and old.revoked_at is not None
    assert new.key.status == "active" and new.key.scopes == ("usage:write",)
    assert (new.key.expires_at - new.key.created_at).days in (29, 30)
    assert speak(dgemu, new.secret) == 200 and speak(dgemu, first.secret) == 401
    assert [k["api_key_id"] for k in customer_keys(dgemu, "acme")] == [new.key.api_key_id]
    with ready.engine.connect() as db:
        owners = store.key_owners(db, first.key.connection_id)
    assert owners[first.key.api_key_id][1] == owners[new.key.api_key_id][1]  # past usage stays attributed
    with pytest.raises(Conflict, match="revoked"):
        service.rotate(first.key.id)


def test_revoke_is_idempotent_and_tolerates_a_key_already_deleted(ready, dgemu):
    service = KeyService(ready)
    a = service.create("acme").key
    b = service.create("acme").key
    key, already = service.revoke(a.api_key_id)
    assert key.status == "revoked" and not already
    assert service.revoke(a.id) == (key, True)
    with dgemu.client() as c:  # someone deleted b in the Deepgram console
        c.delete(f"/v1/projects/{dgemu.project_id}/keys/{b.api_key_id}").raise_for_status()
    key_b, already_b = service.revoke(b.id)
    assert key_b.status == "revoked" and not already_b
    assert customer_keys(dgemu, "acme") == []
    assert [k.status for k in service.list(customer="acme")] == ["revoked", "revoked"]


def test_suspend_revokes_and_reinstate_replaces_keys(ready, dgemu):
    service = KeyService(ready)
    service.create("acme", scopes=["usage:write"])
    customers = CustomerService(ready)
    cust, revoked = customers.suspend("acme")
    assert cust.status == "suspended" and len(revoked) == 1
    assert customer_keys(dgemu, "acme") == []
    cust, issued = customers.reinstate("acme")
    assert cust.status == "active" and len(issued) == 1 and speak(dgemu, issued[0].secret) == 200
    cust, issued_again = customers.reinstate("acme")  # nothing left to replace
    assert issued_again == []
    assert len(customer_keys(dgemu, "acme")) == 1
    with ready.engine.connect() as db:
        actions = [a["action"] for a in store.list_audit(db, subject=cust.id)]
    assert actions == ["customer.create", "customer.suspend", "customer.reinstate"]


# ---------------------------------------------------------------------------- secrets


def test_reencrypt_all_moves_every_secret_to_the_new_key(ready, dgemu):
    ConnectionService(ready, environ=ready.environ).add(
        "stored", project_id=dgemu.project_id, base_url=dgemu.base_url, store_key=True
    )
    issued = KeyService(ready).create("acme", connection="main")
    old = ready.cipher
    new_key = generate_key()
    both = Cipher.from_config(f"{new_key},{old.keyring.to_config()}")
    counts = reencrypt_all(ready, both)
    assert counts["keys"] == 1 and counts["connections"] == 1
    only_new = Cipher.from_config(new_key)
    with ready.engine.connect() as db:
        decrypted = decrypt_everything(db, only_new)
    assert {name for name, _pk in decrypted} >= {"keys", "connections"}
    ready.__dict__["cipher"] = only_new
    assert KeyService(ready).secret(issued.key.id) == issued.secret
    provider = ready.provider_for("stored")
    try:
        assert provider.verify_access().missing == ()
    finally:
        provider.close()


def test_expired_keys_show_as_expired_and_hand_out_no_secret(ready, dgemu):
    from datetime import timedelta

    from keyledger.core.clock import FrozenClock

    service = KeyService(ready)
    issued = service.create("acme", ttl="1h")
    later = Runtime(settings=ready.settings, environ=ready.environ, clock=FrozenClock(ready.clock.now()))
    later.clock.advance(timedelta(hours=2))
    later_keys = KeyService(later)
    assert [k.status for k in later_keys.list(customer="acme")] == ["expired"]
    assert later_keys.list(status="active") == [] and len(later_keys.list(status="expired")) == 1
    with pytest.raises(Conflict, match="expired"):
        later_keys.secret(issued.key.id)
    with pytest.raises(Invalid, match="status"):
        later_keys.list(status="bogus")
    later.engine.dispose()


def test_grant_token_from_a_member_key(ready, dgemu):
    from keyledger.provider.port import ProviderCredentials

    member = dg_create_key(dgemu, ["member"])["key"]
    provider = ready.make_provider(ProviderCredentials(dgemu.base_url, dgemu.project_id, member))
    try:
        grant = provider.grant_token(ttl_seconds=60)
    finally:
        provider.close()
    assert grant.expires_in == 60 and grant.access_token and member not in repr(grant)
    with dgemu.client() as c:
        r = c.post(
            "/v1/speak", json={"text": "hi"}, headers={"Authorization": f"Bearer {grant.access_token}"}
        )
    assert r.status_code == 200
