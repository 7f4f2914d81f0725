"""The real ``keyledger`` CLI (subprocesses) against a real dgemu over HTTP, on SQLite and PostgreSQL:
init, connections, customers, keys (create / list / rotate / revoke, crash recovery after kill -9),
secrets rotation, bad input, and no secret ever printed where it should not be."""

from __future__ import annotations

import json
import os
import re
import stat

import httpx
import pytest
from sqlalchemy import select

from keyledger.core.crypto import Cipher, associated_data
from keyledger.customers import store
from keyledger.customers.secrets import file_secret_key
from keyledger.db.tables_customers import audit_log, key_operations, keys

CUSTOMER_FIELDS = {
    "id",
    "external_id",
    "name",
    "email",
    "plan",
    "currency",
    "timezone",
    "status",
    "billing_mode",
}
KEY_CREATE_FIELDS = {
    "id",
    "customer_id",
    "connection",
    "api_key_id",
    "secret",
    "scopes",
    "tags",
    "expires_at",
}
KEY_LIST_FIELDS = {"id", "customer_id", "connection", "api_key_id", "scopes", "status"} | {
    "created_at",
    "expires_at",
    "revoked_at",
}


def ok(result, *, json_out: bool = True):
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return json.loads(result.stdout) if json_out else result.stdout


def fails(result, match: str) -> str:
    """Exit 1 with exactly one line on stderr that matches."""
    assert result.returncode == 1, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


def dg_customer_keys(dgemu, external_id: str) -> list[dict]:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/keys")
        r.raise_for_status()
    return [
        e["api_key"]
        for e in r.json()["api_keys"]
        if f"customer:{external_id}" in e["api_key"].get("tags", [])
    ]


def speak(dgemu, secret: str) -> int:
    with httpx.Client(base_url=dgemu.base_url, headers={"Authorization": f"Token {secret}"}, timeout=30) as c:
        return c.post("/v1/speak", json={"text": "hello"}).status_code


@pytest.fixture
def dg_env(kl_env, dgemu):
    """kl_env plus the operator's Deepgram key in DEEPGRAM_API_KEY."""
    kl_env.env["DEEPGRAM_API_KEY"] = dgemu.owner_key
    kl_env.env["KEYLEDGER_PROVIDER_MAX_RETRIES"] = "1"
    return kl_env


@pytest.fixture
def with_customer(dg_env, run_cli, dgemu):
    ok(run_cli("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url,
               "--json"))  # fmt: skip
    return ok(run_cli("customers", "add", "Acme Inc", "--external-id", "acme", "--json"))


# ---------------------------------------------------------------------------- init


def test_init_creates_private_config_and_database_and_is_idempotent(kl_env, run_cli):
    # Defaults: SQLite in the working directory, a freshly generated secret key.
    env = kl_env.with_(KEYLEDGER_DATABASE_URL=None, KEYLEDGER_SECRET_KEY=None)
    first = ok(run_cli("init", env=env), json_out=False)
    cfg = kl_env.config_path
    assert "created" in first and "migrated" in first
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert (kl_env.path / "keyledger.db").exists()
    key = file_secret_key(cfg)
    Cipher.from_config(key)  # a valid key
    before = cfg.read_bytes()
    second = ok(run_cli("init", env=env), json_out=False)
    assert "nothing changed" in second and "unchanged" in second and "up to date" in second
    assert cfg.read_bytes() == before
    assert key not in first + second
    # The configured database works: a customer can be added with the generated config alone.
    ok(run_cli("customers", "add", "A", "--external-id", "a", "--json", env=env))


def test_init_on_the_configured_database_with_the_key_from_the_environment(kl_env, run_cli):
    out = ok(run_cli("init"), json_out=False)
    assert "up to date" in out  # the fixture's database is already migrated
    assert file_secret_key(kl_env.config_path) is None  # the key stays in the environment
    assert kl_env.env["KEYLEDGER_SECRET_KEY"] not in out
    assert "nothing changed" in ok(run_cli("init"), json_out=False)


# ---------------------------------------------------------------------------- connections


def test_connections_add_verifies_the_key_and_lists(dg_env, run_cli, dgemu):
    add = ("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url)
    conn = ok(run_cli(*add, "--json"))
    assert (
        conn["name"] == "main" and conn["key_source"] == "env" and conn["api_key_env"] == "DEEPGRAM_API_KEY"
    )
    listed = ok(run_cli("connections", "list", "--json"))
    assert [c["id"] for c in listed] == [conn["id"]]
    human = ok(run_cli("connections", "list"), json_out=False)
    assert "main" in human and dgemu.project_id in human
    fails(run_cli(*add), "already exists")
    for out in (human, json.dumps(listed)):
        assert dgemu.owner_key not in out


def test_connections_add_refuses_weak_wrong_or_unreachable(dg_env, run_cli, dgemu):
    with dgemu.client() as c:
        member = c.post(
            f"/v1/projects/{dgemu.project_id}/keys", json={"comment": "m", "scopes": ["member"]}
        ).json()
    base = ("connections", "add", "main", "--project-id", dgemu.project_id)
    member_env = dg_env.with_(DEEPGRAM_API_KEY=member["key"])
    line = fails(run_cli(*base, "--base-url", dgemu.base_url, env=member_env), r"lacks billing:read")
    assert member["key"] not in line
    wrong = "dg_wrong_" + "x" * 30
    line = fails(run_cli(*base, "--base-url", dgemu.base_url, env=dg_env.with_(DEEPGRAM_API_KEY=wrong)),
                 "refused the key")  # fmt: skip
    assert wrong not in line
    fails(run_cli(*base, "--base-url", "http://127.0.0.1:9"), "cannot reach Deepgram")
    fails(
        run_cli(*base, "--base-url", dgemu.base_url, "--api-key-env", "NOT_SET_ANYWHERE"),
        r"\$NOT_SET_ANYWHERE",
    )
    fails(run_cli(*base, "--base-url", "ftp://x"), "base URL")
    assert ok(run_cli("connections", "list", "--json")) == []


# ---------------------------------------------------------------------------- customers


def test_customers_lifecycle_and_json_contract(dg_env, run_cli, db_url, engine):
    details = (
        "--email",
        "ops@acme.io",
        "--plan",
        "growth",
        "--currency",
        "eur",
        "--timezone",
        "Europe/Berlin",
    )
    added = ok(run_cli("customers", "add", "Acme Inc", "--external-id", "acme", *details, "--json"))
    assert set(added) == CUSTOMER_FIELDS
    assert added | {"id": None} == {
        "id": None, "external_id": "acme", "name": "Acme Inc", "email": "ops@acme.io", "plan": "growth",
        "currency": "EUR", "timezone": "Europe/Berlin", "status": "active", "billing_mode": "managed",
    }  # fmt: skip
    assert ok(run_cli("customers", "show", "acme", "--json")) == added
    assert ok(run_cli("customers", "show", added["id"], "--json")) == added
    updated = ok(run_cli("customers", "update", "acme", "--plan", "scale", "--timezone", "UTC", "--json"))
    assert (updated["plan"], updated["timezone"]) == ("scale", "UTC")
    assert ok(run_cli("customers", "suspend", "acme", "--json"))["status"] == "suspended"
    assert ok(run_cli("customers", "reinstate", "acme", "--json"))["status"] == "active"
    listed = ok(run_cli("customers", "list", "--json"))
    assert [c["external_id"] for c in listed] == ["acme"] and set(listed[0]) == CUSTOMER_FIELDS
    assert "Acme Inc" in ok(run_cli("customers", "list"), json_out=False)
    with engine.connect() as db:
        actions = [a["action"] for a in store.list_audit(db, subject=added["id"])]
        assert {a["actor"] for a in store.list_audit(db)} == {"cli"}
    assert actions == ["customer.create", "customer.update", "customer.suspend", "customer.reinstate"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("customers", "add", "B", "--external-id", "acme"), "already exists"),
        (("customers", "add", "B", "--external-id", "b", "--currency", "EURO"), "ISO 4217"),
        (("customers", "add", "B", "--external-id", "b", "--timezone", "Mars/Olympus"), "time zone"),
        (("customers", "add", "B", "--external-id", "b", "--email", "not-an-email"), "email"),
        (("customers", "show", "nobody"), "not found"),
        (("customers", "update", "acme", "--currency", "12"), "ISO 4217"),
        (("customers", "suspend", "nobody"), "not found"),
        (("keys", "create", "nobody"), "not found"),
        (("keys", "create", "acme", "--ttl", "forever"), "TTL"),
        (("keys", "create", "acme", "--ttl", "0d"), "TTL"),
        (("keys", "create", "acme", "--connection", "nope"), "not found"),
        (("keys", "revoke", "key_nope"), "not found"),
        (("keys", "rotate", "key_nope"), "not found"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_changes_nothing(with_customer, run_cli, engine, args, match):
    with engine.connect() as db:
        audit_before = db.execute(select(audit_log)).all()
    fails(run_cli(*args), match)
    with engine.connect() as db:
        assert db.execute(select(audit_log)).all() == audit_before
        assert db.execute(select(key_operations)).all() == []
    assert ok(run_cli("customers", "show", "acme", "--json")) == with_customer


def test_usage_errors_exit_2(kl_env, run_cli):
    assert run_cli("customers", "add", "X").returncode == 2  # --external-id missing


# ---------------------------------------------------------------------------- keys


def test_keys_create_list_rotate_revoke(with_customer, run_cli, dgemu, engine):
    outputs: list[str] = []

    def run(*args):
        r = run_cli(*args)
        outputs.append(r.stdout + r.stderr)
        return r

    created = ok(run("keys", "create", "acme", "--ttl", "90d", "--comment", "voice agent", "--json"))
    assert set(created) == KEY_CREATE_FIELDS
    assert created["customer_id"] == with_customer["id"] and created["connection"] == "main"
    assert created["scopes"] == ["usage:write"]
    op_tags = [t for t in created["tags"] if t.startswith("op:")]
    assert created["tags"][:2] == ["keyledger", "customer:acme"] and len(op_tags) == 1
    secret = created["secret"]
    assert secret and speak(dgemu, secret) == 200
    (dg,) = dg_customer_keys(dgemu, "acme")
    assert dg["api_key_id"] == created["api_key_id"] and dg["tags"] == created["tags"]
    assert dg["comment"].startswith("voice agent")

    listed = ok(run("keys", "list", "--customer", "acme", "--json"))
    assert [set(k) for k in listed] == [KEY_LIST_FIELDS]
    assert listed[0]["status"] == "active" and listed[0]["expires_at"] == created["expires_at"]
    run("keys", "list")

    human = ok(
        run("keys", "create", "acme", "--scope", "usage:write", "--scope", "usage:read"), json_out=False
    )
    second_secret = re.search(r"secret \(shown once, store it now\): (\S+)", human).group(1)
    assert speak(dgemu, second_secret) == 200

    rotated = ok(run("keys", "rotate", created["id"], "--json"))
    assert rotated["replaced"]["id"] == created["id"] and rotated["replaced"]["status"] == "revoked"
    assert speak(dgemu, rotated["secret"]) == 200 and speak(dgemu, secret) == 401
    revoked = ok(run("keys", "revoke", rotated["api_key_id"], "--json"))
    assert revoked["status"] == "revoked" and revoked["revoked_at"]
    assert ok(run("keys", "revoke", rotated["id"], "--json")) == revoked  # already revoked: fine
    assert speak(dgemu, rotated["secret"]) == 401

    final = ok(run("keys", "list", "--json"))
    assert [k["status"] for k in final] == [
        "revoked",
        "active",
        "revoked",
    ]  # rows kept, usage stays attributed
    assert len(dg_customer_keys(dgemu, "acme")) == 1

    # Secrets appear only in the output of the command that created them (create: 0, rotate: 4).
    for s, creator in ((secret, 0), (second_secret, 3), (rotated["secret"], 4)):
        assert [i for i, out in enumerate(outputs) if s in out] == [creator]
    with engine.connect() as db:
        blobs = [r.secret_ciphertext for r in db.execute(select(keys.c.secret_ciphertext))]
        actions = [r.action for r in db.execute(select(audit_log.c.action))]
    assert all(secret.encode() not in b for b in blobs)
    assert actions.count("key.create") == 3 and "key.rotate" in actions and actions.count("key.revoke") == 1


def test_suspend_revokes_keys_and_reinstate_issues_new_ones(with_customer, run_cli, dgemu):
    first = ok(run_cli("keys", "create", "acme", "--json"))
    suspended = ok(run_cli("customers", "suspend", "acme", "--json"))
    assert suspended["status"] == "suspended" and suspended["revoked_keys"] == [first["id"]]
    assert dg_customer_keys(dgemu, "acme") == [] and speak(dgemu, first["secret"]) == 401
    fails(run_cli("keys", "create", "acme"), "suspended")
    back = ok(run_cli("customers", "reinstate", "acme", "--json"))
    (new,) = back["keys_created"]
    assert (
        back["status"] == "active" and new["scopes"] == first["scopes"] and speak(dgemu, new["secret"]) == 200
    )


def test_wrong_or_unreachable_deepgram_at_key_create_changes_nothing(
    with_customer, dg_env, run_cli, dgemu, engine
):
    fails(run_cli("keys", "create", "acme", env=dg_env.with_(DEEPGRAM_API_KEY="dg_wrong_" + "y" * 30)),
          "refused the key")  # fmt: skip
    fails(run_cli("keys", "create", "acme", env=dg_env.with_(DEEPGRAM_API_KEY=None)), r"\$DEEPGRAM_API_KEY")
    with engine.begin() as db:  # point the connection at a port nobody listens on
        from keyledger.db.tables_customers import connections

        db.execute(connections.update().values(base_url="http://127.0.0.1:9"))
    fails(run_cli("keys", "create", "acme"), "cannot reach Deepgram")
    with engine.connect() as db:
        assert db.execute(select(key_operations)).all() == [] and db.execute(select(keys)).all() == []
    assert dg_customer_keys(dgemu, "acme") == []


def test_kill_9_after_deepgram_created_the_key_then_rerun_ends_with_one_key(
    with_customer, dg_env, run_cli, dgemu, engine
):
    crashed = run_cli(
        "keys", "create", "acme", "--json", env=dg_env.with_(KEYLEDGER_FAULT="keys.after_provider_create")
    )
    assert crashed.returncode == -9, crashed.stderr
    (orphan,) = dg_customer_keys(dgemu, "acme")  # Deepgram made it; the ledger never heard back
    with engine.connect() as db:
        assert db.execute(select(keys)).all() == []
        assert [o.state for o in db.execute(select(key_operations))] == ["pending"]

    rerun = run_cli("keys", "create", "acme", "--json")
    adopted = ok(rerun)
    assert "adopted" in rerun.stderr and "keys rotate" in rerun.stderr
    assert adopted["api_key_id"] == orphan["api_key_id"] and adopted["secret"] is None
    assert [k["api_key_id"] for k in dg_customer_keys(dgemu, "acme")] == [orphan["api_key_id"]]
    ledger = ok(run_cli("keys", "list", "--json"))
    assert [(k["api_key_id"], k["status"]) for k in ledger] == [(orphan["api_key_id"], "active")]
    with engine.connect() as db:
        assert [o.state for o in db.execute(select(key_operations))] == ["done"]

    # A further create is a deliberate second key, not a replay.
    ok(run_cli("keys", "create", "acme", "--json"))
    assert len(dg_customer_keys(dgemu, "acme")) == 2


def test_kill_9_in_the_middle_of_a_rotation_then_rerun_finishes_it(with_customer, dg_env, run_cli, dgemu):
    first = ok(run_cli("keys", "create", "acme", "--json"))
    crashed = run_cli(
        "keys", "rotate", first["id"], env=dg_env.with_(KEYLEDGER_FAULT="keys.rotate_after_create")
    )
    assert crashed.returncode == -9
    assert len(dg_customer_keys(dgemu, "acme")) == 2  # new key made and recorded, old not yet deleted
    done = ok(run_cli("keys", "rotate", first["id"], "--json"))
    assert speak(dgemu, done["secret"]) == 200 and speak(dgemu, first["secret"]) == 401
    assert [k["api_key_id"] for k in dg_customer_keys(dgemu, "acme")] == [done["api_key_id"]]
    assert [k["status"] for k in ok(run_cli("keys", "list", "--json"))] == ["revoked", "active"]


# ---------------------------------------------------------------------------- secrets


def test_secrets_rotate_reencrypts_everything_and_updates_the_config(kl_env, run_cli, dgemu, engine):
    env = kl_env.with_(KEYLEDGER_SECRET_KEY=None, DEEPGRAM_API_KEY=dgemu.owner_key)
    ok(run_cli("init", env=env), json_out=False)
    old_key = file_secret_key(kl_env.config_path)
    ok(run_cli("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url,
               "--store-key", "--json", env=env))  # fmt: skip
    ok(run_cli("customers", "add", "Acme", "--external-id", "acme", "--json", env=env))
    created = ok(run_cli("keys", "create", "acme", "--json", env=env))

    result = run_cli("secrets", "rotate", "--json", env=env)
    summary = ok(result)
    new_key = file_secret_key(kl_env.config_path)
    assert new_key != old_key and "," not in new_key
    assert summary["keys"] == 1 and summary["connections"] == 1
    assert summary["key_id"] == Cipher.from_config(new_key).keyring.primary_id
    assert new_key not in result.stdout + result.stderr and old_key not in result.stdout + result.stderr
    assert stat.S_IMODE(os.stat(kl_env.config_path).st_mode) == 0o600

    with engine.connect() as db:
        (row,) = db.execute(select(keys.c.id, keys.c.secret_ciphertext)).all()
    ad = associated_data("keys", row.id, "secret")
    assert Cipher.from_config(new_key).decrypt(row.secret_ciphertext, ad) == created["secret"]
    with pytest.raises(Exception, match="not configured"):
        Cipher.from_config(old_key).decrypt(row.secret_ciphertext, ad)
    # Everything still works under the new key, including the stored connection key.
    env.pop("DEEPGRAM_API_KEY")
    again = ok(run_cli("keys", "create", "acme", "--json", env=env))
    assert speak(dgemu, again["secret"]) == 200
    ok(run_cli("secrets", "rotate", env=env), json_out=False)  # and again
    with engine.connect() as db:
        assert [a["action"] for a in store.list_audit(db, subject="secret_key")] == ["secrets.rotate"] * 2


def test_secrets_rotate_with_the_key_in_the_environment(kl_env, run_cli):
    fails(run_cli("secrets", "rotate"), "single key")
    new = ok(run_cli("secrets", "generate-key"), json_out=False).strip()
    env = kl_env.with_(KEYLEDGER_SECRET_KEY=f"{new},{kl_env.env['KEYLEDGER_SECRET_KEY']}")
    out = ok(run_cli("secrets", "rotate", "--json", env=env))
    assert out["key_location"] == "env" and out["key_id"] == Cipher.from_config(new).keyring.primary_id


def test_kill_9_during_secrets_rotate_loses_nothing(kl_env, run_cli, dgemu):
    env = kl_env.with_(KEYLEDGER_SECRET_KEY=None, DEEPGRAM_API_KEY=dgemu.owner_key)
    ok(run_cli("init", env=env), json_out=False)
    add = ("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url)
    ok(run_cli(*add, "--store-key", "--json", env=env))
    ok(run_cli("customers", "add", "Acme", "--external-id", "acme", "--json", env=env))
    env.pop("DEEPGRAM_API_KEY")  # from here on only the stored (encrypted) connection key is used
    old_key = file_secret_key(kl_env.config_path)
    crashed = run_cli("secrets", "rotate", env={**env, "KEYLEDGER_FAULT": "secrets.after_reencrypt"})
    assert crashed.returncode == -9
    both = file_secret_key(kl_env.config_path).split(",")
    assert len(both) == 2 and both[1] == old_key  # the old key is kept until the rotation is done
    created = ok(run_cli("keys", "create", "acme", "--json", env=env))  # everything still decrypts
    ok(run_cli("secrets", "rotate", env=env), json_out=False)
    assert "," not in file_secret_key(kl_env.config_path)
    ok(run_cli("keys", "rotate", created["id"], "--json", env=env))
