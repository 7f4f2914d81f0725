"""The configuration file's secret key and its rotation (``keyledger init``, ``keyledger secrets rotate``).

Where the key lives decides how rotation works:

- in ``keyledger.toml`` (what ``keyledger init`` writes): ``secrets rotate`` generates a new key, writes
  ``"NEW,OLD"`` to the file, re-encrypts every stored secret under NEW in one transaction, proves each
  decrypts with NEW alone, and only then writes ``"NEW"``. A crash at any step leaves a file that still
  decrypts everything.
- in ``KEYLEDGER_SECRET_KEY`` (keyledger cannot edit your environment): put a new key in front
  (``KEYLEDGER_SECRET_KEY=NEW,OLD``, NEW from ``keyledger secrets generate-key``), run ``secrets rotate``,
  then drop OLD.

Every encrypted column is re-sealed (see :mod:`keyledger.customers.at_rest`), and so is the key-check canary
that makes a process with a wrong key refuse to start.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from keyledger.core.crypto import Cipher, Keyring, generate_key
from keyledger.core.errors import Invalid
from keyledger.core.faults import fault_point
from keyledger.customers.at_rest import decrypt_everything, reencrypt_everything, verify_secret_key
from keyledger.customers.service import Deps
from keyledger.customers.store import write_audit

SECRET_ENV = "KEYLEDGER_SECRET_KEY"
_SECRET_LINE = re.compile(r"^\s*secret_key\s*=.*$", re.MULTILINE)


def render_config(*, database_url: str | None, secret_key: str | None) -> str:
    lines = [
        "# keyledger configuration (created by `keyledger init`). Environment variables KEYLEDGER_* win.",
        "# secret_key: keys that encrypt secrets at rest, newest first, comma-separated (see docs).",
        "# Keep this file private (mode 0600); rotate with `keyledger secrets rotate`.",
        "[keyledger]",
    ]
    if database_url is not None:
        lines.append(f"database_url = {json.dumps(database_url)}")
    else:
        lines.append("# database_url comes from KEYLEDGER_DATABASE_URL")
    if secret_key is not None:
        lines.append(f"secret_key = {json.dumps(secret_key)}")
    else:
        lines.append("# secret_key comes from KEYLEDGER_SECRET_KEY")
    return "\n".join(lines) + "\n"


def create_config_file(path: Path, content: str) -> None:
    """Create the file with mode 0600 (never world-readable, not even for an instant)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def file_secret_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    data = tomllib.loads(path.read_text())
    data = data.get("keyledger", data)
    value = data.get("secret_key")
    return str(value) if value else None


def set_file_secret_key(path: Path, value: str) -> None:
    text = path.read_text()
    line = f"secret_key = {json.dumps(value)}"
    if _SECRET_LINE.search(text):
        text = _SECRET_LINE.sub(lambda _m: line, text, count=1)
    elif "[keyledger]" in text:
        text = text.replace("[keyledger]", "[keyledger]\n" + line, 1)
    else:
        text = line + "\n" + text
    _atomic_write(path, text)
    if file_secret_key(path) != value:  # pragma: no cover - defensive
        raise Invalid(f"{path}: could not update secret_key")


@dataclass(frozen=True)
class Rotation:
    new_key_id: str
    old_key_ids: tuple[str, ...]
    keys: int
    connections: int
    where: str  # "file" | "env"
    webhook_endpoints: int = 0
    cached_responses: int = 0  # idempotency replays (encrypted response bodies)


def reencrypt_all(deps: Deps, cipher: Cipher, actor: str = "cli") -> dict[str, int]:
    """Every stored secret (keys, connections, webhook endpoints, cached responses, the key-check canary)
    re-sealed under the primary key in one transaction, then proven to decrypt with the primary key alone."""
    with deps.engine.begin() as db:
        counts = reencrypt_everything(db, cipher)
        write_audit(db, at=deps.clock.now(), actor=actor, action="secrets.rotate", subject="secret_key",
                    details={**counts, "key_id": cipher.keyring.primary_id})
    only_new = Cipher(cipher.keyring.only_primary())
    with deps.engine.connect() as db:
        decrypt_everything(db, only_new)
    return counts


def _rotation(keyring: Keyring, old_ids: tuple[str, ...], counts: dict[str, int], where: str) -> Rotation:
    return Rotation(keyring.primary_id, old_ids, counts["keys"], counts["connections"], where,
                    counts["webhook_endpoints"], counts["idempotency_keys"])


def rotate_secret_key(
    deps: Deps, *, config_path: Path, environ: dict[str, str] | None = None, actor: str = "cli"
) -> Rotation:
    env = os.environ if environ is None else environ
    if env.get(SECRET_ENV):
        keyring = Keyring.parse(env[SECRET_ENV])
        if len(keyring.keys) == 1:
            raise Invalid(
                f"{SECRET_ENV} holds a single key: put a new one in front "
                f"({SECRET_ENV}=NEW,OLD; NEW from `keyledger secrets generate-key`) and run again"
            )
        verify_secret_key(deps.engine, Cipher(keyring))
        counts = reencrypt_all(deps, Cipher(keyring), actor)
        return _rotation(keyring, keyring.ids[1:], counts, "env")
    current = file_secret_key(config_path)
    if not current:
        raise Invalid(f"no secret key in {config_path} or {SECRET_ENV} (run `keyledger init`)")
    old = Keyring.parse(current)
    verify_secret_key(deps.engine, Cipher(old))  # never rotate away from a key that is not the database's
    new_key = Keyring.parse(generate_key()).keys[0]
    both = old.with_new_primary(new_key)
    # 1. The file names both keys before any ciphertext changes: a crash from here on loses nothing.
    set_file_secret_key(config_path, both.to_config())
    # 2. Everything re-encrypted in one transaction, then proven to decrypt with the new key alone.
    counts = reencrypt_all(deps, Cipher(both), actor)
    fault_point("secrets.after_reencrypt")
    # 3. Only now is the old key dropped.
    set_file_secret_key(config_path, both.only_primary().to_config())
    return _rotation(both, old.ids, counts, "file")
