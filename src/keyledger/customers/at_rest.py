"""Every encrypted column in the database, the secret-key check, and re-encrypting all of them at once.

- :data:`ENCRYPTED_COLUMNS`: each table and column holding a ciphertext, with the associated data that binds
  a ciphertext to its row (the same as the owning feature uses; a mismatch fails the rotation tests).
- :func:`verify_secret_key`: refuses a secret key that is not the database's. It decrypts a canary stored in
  ``secret_key_check``; a database without a canary yet is checked against its stored secrets, then gets one.
- :func:`reencrypt_everything`: every ciphertext (and the canary) under the primary key, in one transaction,
  then proven to decrypt with the primary key alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, create_engine, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from keyledger.core.crypto import Cipher, DecryptionError, WrongSecretKey, associated_data
from keyledger.db.tables_api import idempotency_keys
from keyledger.db.tables_customers import connections, keys
from keyledger.db.tables_notifications import webhook_endpoints
from keyledger.db.tables_secrets import secret_key_check

CANARY_ID = "canary"
CANARY_PLAINTEXT = b"keyledger secret key check v1"


@dataclass(frozen=True)
class EncryptedColumn:
    name: str  # what the counts call it
    table: Table
    column: str
    pk: tuple[str, ...]
    ad: Callable[[Mapping[str, Any]], bytes]


ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("keys", keys, "secret_ciphertext", ("id",),
                    lambda r: associated_data("keys", r["id"], "secret")),
    EncryptedColumn("connections", connections, "api_key_ciphertext", ("id",),
                    lambda r: associated_data("connections", r["id"], "api_key")),
    EncryptedColumn("webhook_endpoints", webhook_endpoints, "secret_ciphertext", ("id",),
                    lambda r: associated_data("webhook_endpoints", r["id"], "secret")),
    EncryptedColumn("idempotency_keys", idempotency_keys, "body", ("actor", "key"),
                    lambda r: associated_data("idempotency_keys", f"{r['actor']}\n{r['key']}", "body")),
    EncryptedColumn("secret_key_check", secret_key_check, "canary", ("id",),
                    lambda r: associated_data("secret_key_check", r["id"], "canary")),
)
_CANARY = ENCRYPTED_COLUMNS[-1]


def _rows(db, col: EncryptedColumn, limit: int | None = None):
    t = col.table
    q = select(*(t.c[k] for k in col.pk), t.c[col.column]).where(t.c[col.column].is_not(None))
    q = q.order_by(*(t.c[k] for k in col.pk))
    return db.execute(q.limit(limit) if limit else q).mappings().all()


def _wrong_key(cipher: Cipher, blob: bytes) -> WrongSecretKey:
    try:
        sealed_with = cipher.key_id_of(blob)
    except DecryptionError:
        sealed_with = "unknown"
    return WrongSecretKey(
        f"the configured secret key is not this database's: its secrets are sealed with key {sealed_with}, "
        f"configured key id(s): {', '.join(cipher.keyring.ids)}. Set KEYLEDGER_SECRET_KEY (or secret_key in "
        "keyledger.toml) to the key this database was set up with"
    )


def _side_engine(engine: Engine) -> Engine:
    """A connection of its own for the check: ``Runtime.cipher`` is first used lazily, often inside a caller's
    transaction, and on SQLite every transaction of the main engine takes the write lock (BEGIN IMMEDIATE).
    Reads here never wait for it (WAL); the one write waits at most a moment."""
    if engine.url.get_backend_name() == "sqlite":
        return create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 0.5})
    return create_engine(engine.url, poolclass=NullPool)


def verify_secret_key(engine: Engine, cipher: Cipher) -> None:
    """Raise :class:`WrongSecretKey` unless ``cipher`` decrypts this database's secrets.

    A database that is not migrated yet has nothing to check. One without a canary (older, or fresh) is
    checked against the first stored secret of each encrypted column, then gets a canary sealed with the
    primary key (skipped, and done at a later start, if another writer holds the database just then)."""
    side = _side_engine(engine)
    try:
        _verify(side, cipher)
    finally:
        side.dispose()


def _verify(engine: Engine, cipher: Cipher) -> None:
    if not inspect(engine).has_table(secret_key_check.name):
        return
    with engine.connect() as db:
        q = select(secret_key_check).where(secret_key_check.c.id == CANARY_ID)
        row = db.execute(q).mappings().first()
        if row is not None:
            try:
                cipher.decrypt_bytes(row["canary"], _CANARY.ad(row))
            except DecryptionError:
                raise _wrong_key(cipher, row["canary"]) from None
            return
        for col in ENCRYPTED_COLUMNS[:-1]:
            for r in _rows(db, col, limit=1):
                try:
                    cipher.decrypt_bytes(r[col.column], col.ad(r))
                except DecryptionError:
                    raise _wrong_key(cipher, r[col.column]) from None
    now = datetime.now(UTC)
    blob = cipher.encrypt(CANARY_PLAINTEXT, _CANARY.ad({"id": CANARY_ID}))
    try:
        with engine.begin() as db:
            db.execute(secret_key_check.insert().values(id=CANARY_ID, canary=blob, created_at=now,
                                                        updated_at=now))
    except IntegrityError:  # another process wrote it first: check against theirs
        _verify(engine, cipher)
    except OperationalError:  # SQLite busy (a writer holds it): the secrets checked out; canary next time
        pass


def reencrypt_everything(db, cipher: Cipher) -> dict[str, int]:
    """Re-seal every ciphertext (and the canary) under ``cipher``'s primary key, inside the caller's
    transaction ``db``. Returns the count per encrypted column (the canary not counted)."""
    counts: dict[str, int] = {}
    for col in ENCRYPTED_COLUMNS:
        n = 0
        for r in _rows(db, col):
            t = col.table
            blob = cipher.reencrypt(r[col.column], col.ad(r))
            cond = [t.c[k] == r[k] for k in col.pk]
            db.execute(update(t).where(*cond).values({col.column: blob}))
            n += 1
        if col is not _CANARY:
            counts[col.name] = n
    if not _rows(db, _CANARY, limit=1):
        now = datetime.now(UTC)
        db.execute(secret_key_check.insert().values(
            id=CANARY_ID, canary=cipher.encrypt(CANARY_PLAINTEXT, _CANARY.ad({"id": CANARY_ID})),
            created_at=now, updated_at=now))
    else:
        db.execute(update(secret_key_check).values(updated_at=datetime.now(UTC)))
    return counts


def decrypt_everything(db, cipher: Cipher) -> dict[tuple[str, tuple], bytes]:
    """Every stored secret, decrypted: {(column name, primary key): plaintext}. Raises DecryptionError on
    the first that does not decrypt (used to prove a rotation kept everything)."""
    out: dict[tuple[str, tuple], bytes] = {}
    for col in ENCRYPTED_COLUMNS:
        for r in _rows(db, col):
            out[(col.name, tuple(r[k] for k in col.pk))] = cipher.decrypt_bytes(r[col.column], col.ad(r))
    return out
