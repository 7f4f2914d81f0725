"""Crypto at rest, on SQLite and PostgreSQL: a ciphertext moved to another row (same table, or another
table) never decrypts — the product reports a clear error, never another row's plaintext; ``keyledger
secrets rotate`` keeps every stored secret (all decrypted values equal before and after, in every encrypted
column), and afterwards the old key neither decrypts nor starts a process."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from keyledger.core.crypto import Cipher, DecryptionError, WrongSecretKey
from keyledger.customers.at_rest import ENCRYPTED_COLUMNS, decrypt_everything, verify_secret_key
from keyledger.customers.secrets import file_secret_key, render_config
from keyledger.customers.service import KeyService
from keyledger.db.tables_customers import connections, keys
from keyledger.db.tables_notifications import webhook_endpoints
from keyledger.notifications.service import WebhookService
from tests.api.conftest import problem_ok


@pytest.fixture
def sealed(api):
    """Stored secrets of every kind: two customers' keys, the connection's key, a webhook secret, and an
    encrypted idempotent response."""
    rt = api.runtime
    a, b = api.customer("alpha"), api.customer("bravo")
    with api.client() as c:
        ka = c.post(f"/customers/{a['id']}/keys", headers={"Idempotency-Key": "create-alpha-key"}).json()
        kb = c.post(f"/customers/{b['id']}/keys").json()
    hook = WebhookService(rt.engine, rt.cipher, rt.clock).add("https://hooks.example.com/kl")
    return api, {"a": a, "b": b, "ka": ka, "kb": kb, "hook": hook}


def _set(engine, table, column: str, row_id: str, blob: bytes) -> None:
    with engine.begin() as db:
        db.execute(update(table).where(table.c.id == row_id).values({column: blob}))


def test_ciphertexts_moved_between_rows_or_tables_do_not_decrypt(sealed):
    api, s = sealed
    rt = api.runtime
    with rt.engine.connect() as db:
        before = decrypt_everything(db, rt.cipher)
        blobs = {(c.name, pk): blob for c in ENCRYPTED_COLUMNS
                 for pk, blob in [((r[c.pk[0]],), r[c.column]) for r in db.execute(
                     c.table.select()).mappings()]}
    ka, kb = s["ka"]["id"], s["kb"]["id"]
    key_a, key_b = blobs[("keys", (ka,))], blobs[("keys", (kb,))]
    # same table: alpha's and bravo's key secrets swapped
    _set(rt.engine, keys, "secret_ciphertext", ka, key_b)
    _set(rt.engine, keys, "secret_ciphertext", kb, key_a)
    service = KeyService(rt, actor="tests")
    for key_id in (ka, kb):
        with pytest.raises(DecryptionError, match=f"keys:{key_id}:secret does not decrypt"):
            service.secret(key_id)
    with api.client() as c:
        r = c.get(f"/customers/{s['a']['id']}/credentials")
        body = problem_ok(r, 500)
        assert "does not decrypt" in body["detail"]
        assert s["ka"]["secret"] not in r.text and s["kb"]["secret"] not in r.text
    # across tables: a key secret as the connection's key, the webhook secret as a key secret
    _set(rt.engine, keys, "secret_ciphertext", ka, key_a)
    _set(rt.engine, connections, "api_key_ciphertext", api.connection_id, key_a)
    _set(rt.engine, keys, "secret_ciphertext", kb, blobs[("webhook_endpoints", (s["hook"]["id"],))])
    _set(rt.engine, webhook_endpoints, "secret_ciphertext", s["hook"]["id"], key_b)
    with rt.engine.connect() as db, pytest.raises(DecryptionError):
        decrypt_everything(db, rt.cipher)
    with pytest.raises(DecryptionError, match="connections:.*does not decrypt"):
        rt.provider_for(api.connection_id)
    with pytest.raises(DecryptionError, match="does not decrypt"):
        service.secret(kb)
    assert service.secret(ka) == s["ka"]["secret"] == before[("keys", (ka,))].decode()
    # a truncated or foreign-format blob is a clear error too
    for bad in (b"", b"\x01", b"\x02" + key_a[1:], key_a[:-1], key_a[:20]):
        _set(rt.engine, keys, "secret_ciphertext", ka, bad)
        with pytest.raises(DecryptionError):
            service.secret(ka)


def test_secrets_rotate_keeps_every_secret_and_retires_the_old_key(sealed, kl_env, run_cli):
    api, s = sealed
    rt = api.runtime
    old_key = rt.settings.secret_key.get_secret_value()
    kl_env.config_path.write_text(render_config(database_url=None, secret_key=old_key))
    env = kl_env.with_(KEYLEDGER_SECRET_KEY=None, KEYLEDGER_DATABASE_URL=rt.settings.database_url)
    with rt.engine.connect() as db:
        before = decrypt_everything(db, rt.cipher)
    kinds = {name for name, _pk in before}
    assert kinds == {c.name for c in ENCRYPTED_COLUMNS}, kinds  # every encrypted column is exercised

    res = run_cli("secrets", "rotate", "--json", env=env)
    assert res.returncode == 0, res.stderr
    new_key = file_secret_key(kl_env.config_path)
    assert new_key and "," not in new_key and new_key != old_key
    new = Cipher.from_config(new_key)
    with rt.engine.connect() as db:
        after = decrypt_everything(db, new)
    assert after == before
    # the old key decrypts nothing any more, and refuses to start
    old = Cipher.from_config(old_key)
    with rt.engine.connect() as db, pytest.raises(DecryptionError, match="not configured"):
        decrypt_everything(db, old)
    with pytest.raises(WrongSecretKey):
        verify_secret_key(rt.engine, old)
    refused = run_cli("keys", "create", "alpha", env=kl_env.with_(KEYLEDGER_SECRET_KEY=old_key,
                                                                   KEYLEDGER_DATABASE_URL=rt.settings.database_url))
    assert refused.returncode == 1 and refused.stderr.startswith("error: the configured secret key is not")
    assert len(refused.stderr.strip().splitlines()) == 1
    # and the new key is the database's (the canary was re-sealed too)
    verify_secret_key(rt.engine, new)
