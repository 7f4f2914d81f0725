"""SQL for customers, connections, keys, key operations and the audit log (SQLAlchemy Core).

Every function takes an open ``db`` connection; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection as DB
from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from keyledger.core.errors import Conflict, NotFound
from keyledger.core.ids import new_id
from keyledger.customers.model import Connection, Customer, Key
from keyledger.db.tables_customers import audit_log, connections, customers, key_operations, keys

# ---------------------------------------------------------------------------- audit


def write_audit(
    db: DB, *, at: datetime, actor: str, action: str, subject: str, details: dict[str, Any] | None = None
) -> str:
    audit_id = new_id("aud")
    db.execute(
        insert(audit_log).values(
            id=audit_id, at=at, actor=actor, action=action, subject=subject, details=details or {}
        )
    )
    return audit_id


def list_audit(db: DB, *, subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    q = select(audit_log).order_by(audit_log.c.at, audit_log.c.id).limit(limit)
    if subject is not None:
        q = q.where(audit_log.c.subject == subject)
    return [dict(r._mapping) for r in db.execute(q)]


# ---------------------------------------------------------------------------- customers


def insert_customer(db: DB, values: dict[str, Any]) -> Customer:
    existing = db.execute(
        select(customers.c.id).where(customers.c.external_id == values["external_id"])
    ).first()
    if existing:
        raise Conflict(
            f"a customer with external id {values['external_id']!r} already exists ({existing.id})"
        )
    try:
        with db.begin_nested():
            db.execute(insert(customers).values(**values))
    except IntegrityError:
        raise Conflict(f"a customer with external id {values['external_id']!r} already exists") from None
    return get_customer(db, values["id"])


def find_customer(db: DB, ref: str) -> Customer | None:
    """By id or external id (an id wins if both happen to match)."""
    if "\x00" in ref:  # no id holds NUL (PostgreSQL text cannot even compare with one)
        return None
    rows = db.execute(
        select(customers).where(or_(customers.c.id == ref, customers.c.external_id == ref))
    ).all()
    if not rows:
        return None
    rows.sort(key=lambda r: r.id != ref)
    return Customer.from_row(rows[0])


def get_customer(db: DB, ref: str, *, for_update: bool = False) -> Customer:
    if for_update and "\x00" not in ref:
        row = db.execute(
            select(customers)
            .where(or_(customers.c.id == ref, customers.c.external_id == ref))
            .with_for_update()
        ).first()
        if row is not None:
            return Customer.from_row(row)
    customer = find_customer(db, ref)
    if customer is None:
        raise NotFound(f"customer {ref!r} not found (give its id or external id)")
    return customer


def list_customers(db: DB, *, status: str | None = None) -> list[Customer]:
    q = select(customers).order_by(customers.c.created_at, customers.c.id)
    if status:
        q = q.where(customers.c.status == status)
    return [Customer.from_row(r) for r in db.execute(q)]


def update_customer(db: DB, customer_id: str, values: dict[str, Any]) -> Customer:
    if "external_id" in values:
        clash = db.execute(
            select(customers.c.id).where(
                customers.c.external_id == values["external_id"], customers.c.id != customer_id
            )
        ).first()
        if clash:
            raise Conflict(
                f"a customer with external id {values['external_id']!r} already exists ({clash.id})"
            )
    db.execute(update(customers).where(customers.c.id == customer_id).values(**values))
    return get_customer(db, customer_id)


# ---------------------------------------------------------------------------- connections


def insert_connection(db: DB, values: dict[str, Any]) -> Connection:
    if db.execute(select(connections.c.id).where(connections.c.name == values["name"])).first():
        raise Conflict(f"a connection named {values['name']!r} already exists")
    try:
        with db.begin_nested():
            db.execute(insert(connections).values(**values))
    except IntegrityError:
        raise Conflict(f"a connection named {values['name']!r} already exists") from None
    return Connection.from_row(connection_row(db, values["id"]))


def connection_row(db: DB, ref: str) -> Row:
    """The raw row (with the encrypted key), by id or name."""
    row = db.execute(
        select(connections).where(or_(connections.c.id == ref, connections.c.name == ref))
    ).first()
    if row is None:
        raise NotFound(f"connection {ref!r} not found (see: keyledger connections list)")
    return row


def get_connection(db: DB, ref: str) -> Connection:
    return Connection.from_row(connection_row(db, ref))


def list_connections(db: DB, *, kind: str | None = None) -> list[Connection]:
    q = select(connections).order_by(connections.c.created_at, connections.c.id)
    if kind:
        q = q.where(connections.c.kind == kind)
    return [Connection.from_row(r) for r in db.execute(q)]


def default_managed_connection(db: DB) -> Connection:
    rows = list_connections(db, kind="managed")
    active = [c for c in rows if c.status == "active"]
    if not active:
        raise NotFound("no connection yet (add one: keyledger connections add NAME --project-id P)")
    if len(active) > 1:
        names = ", ".join(c.name for c in active)
        raise NotFound(f"several connections exist ({names}); choose one with --connection")
    return active[0]


def connection_secrets(db: DB) -> list[Row]:
    return db.execute(
        select(connections.c.id, connections.c.api_key_ciphertext).where(
            connections.c.api_key_ciphertext.is_not(None)
        )
    ).all()


def set_connection_ciphertext(db: DB, connection_id: str, blob: bytes) -> None:
    db.execute(update(connections).where(connections.c.id == connection_id).values(api_key_ciphertext=blob))


# ---------------------------------------------------------------------------- keys


def _key_query():
    return select(keys, connections.c.name.label("connection_name")).join(
        connections, connections.c.id == keys.c.connection_id
    )


def _key(row: Row) -> Key:
    m = row._mapping
    return Key(
        id=m["id"],
        customer_id=m["customer_id"],
        connection_id=m["connection_id"],
        connection=m["connection_name"],
        api_key_id=m["api_key_id"],
        comment=m["comment"],
        scopes=tuple(m["scopes"] or ()),
        tags=tuple(m["tags"] or ()),
        operation_id=m["operation_id"],
        status=m["status"],
        has_secret=m["secret_ciphertext"] is not None,
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


def insert_key(db: DB, values: dict[str, Any]) -> Key:
    db.execute(insert(keys).values(**values))
    return get_key(db, values["id"])


def find_key(db: DB, ref: str) -> Key | None:
    """By ledger id or Deepgram api_key_id."""
    row = db.execute(_key_query().where(or_(keys.c.id == ref, keys.c.api_key_id == ref))).first()
    return _key(row) if row else None


def get_key(db: DB, ref: str) -> Key:
    key = find_key(db, ref)
    if key is None:
        raise NotFound(f"key {ref!r} not found (give its id or Deepgram api_key_id)")
    return key


def key_by_operation(db: DB, operation_id: str) -> Key | None:
    row = db.execute(_key_query().where(keys.c.operation_id == operation_id)).first()
    return _key(row) if row else None


def list_keys(
    db: DB, *, customer_id: str | None = None, connection_id: str | None = None, status: str | None = None
) -> list[Key]:
    q = _key_query().order_by(keys.c.created_at, keys.c.id)
    if customer_id:
        q = q.where(keys.c.customer_id == customer_id)
    if connection_id:
        q = q.where(keys.c.connection_id == connection_id)
    if status:
        q = q.where(keys.c.status == status)
    return [_key(r) for r in db.execute(q)]


def key_secret_ciphertext(db: DB, key_id: str) -> bytes | None:
    return db.execute(select(keys.c.secret_ciphertext).where(keys.c.id == key_id)).scalar_one_or_none()


def key_secrets(db: DB) -> list[Row]:
    return db.execute(
        select(keys.c.id, keys.c.secret_ciphertext).where(keys.c.secret_ciphertext.is_not(None))
    ).all()


def set_key_ciphertext(db: DB, key_id: str, blob: bytes) -> None:
    db.execute(update(keys).where(keys.c.id == key_id).values(secret_ciphertext=blob))


def mark_key_revoked(db: DB, key_id: str, at: datetime) -> bool:
    """Mark a key revoked; False when it already was (a concurrent revoke got there first)."""
    result = db.execute(
        update(keys)
        .where(keys.c.id == key_id, keys.c.status != "revoked")
        .values(status="revoked", revoked_at=at)
    )
    return result.rowcount > 0


def key_owners(db: DB, connection_id: str) -> dict[str, tuple[str, str]]:
    """Deepgram ``api_key_id`` → ``(key_id, customer_id)`` for every key ever issued on a connection.

    Revoked and expired keys are included: their past usage still belongs to their customer.
    """
    rows = db.execute(
        select(keys.c.api_key_id, keys.c.id, keys.c.customer_id).where(keys.c.connection_id == connection_id)
    )
    return {r.api_key_id: (r.id, r.customer_id) for r in rows}


# ---------------------------------------------------------------------------- key operations


def insert_operation(db: DB, values: dict[str, Any]) -> dict[str, Any]:
    db.execute(insert(key_operations).values(**values))
    return get_operation(db, values["id"])


def get_operation(db: DB, operation_id: str) -> dict[str, Any]:
    row = db.execute(select(key_operations).where(key_operations.c.id == operation_id)).first()
    if row is None:
        raise NotFound(f"key operation {operation_id!r} not found")
    return dict(row._mapping)


def pending_operations(
    db: DB,
    *,
    kind: str | None = None,
    customer_id: str | None = None,
    connection_id: str | None = None,
    key_id: str | None = None,
) -> list[dict[str, Any]]:
    q = (
        select(key_operations)
        .where(key_operations.c.state == "pending")
        .order_by(key_operations.c.created_at, key_operations.c.id)
    )
    if kind:
        q = q.where(key_operations.c.kind == kind)
    if customer_id:
        q = q.where(key_operations.c.customer_id == customer_id)
    if connection_id:
        q = q.where(key_operations.c.connection_id == connection_id)
    if key_id:
        q = q.where(key_operations.c.key_id == key_id)
    return [dict(r._mapping) for r in db.execute(q)]


def operations_for_customer(db: DB, customer_id: str) -> list[dict[str, Any]]:
    q = (
        select(key_operations)
        .where(key_operations.c.customer_id == customer_id)
        .order_by(key_operations.c.created_at, key_operations.c.id)
    )
    return [dict(r._mapping) for r in db.execute(q)]


def finish_operation(
    db: DB, operation_id: str, *, state: str, at: datetime, key_id: str | None = None
) -> None:
    values: dict[str, Any] = {"state": state, "finished_at": at}
    if key_id is not None:
        values["key_id"] = key_id
    db.execute(update(key_operations).where(key_operations.c.id == operation_id).values(**values))
