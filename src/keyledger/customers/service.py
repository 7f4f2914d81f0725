"""Use cases for customers, connections and keys. Each is one or more short transactions; Deepgram is
never called inside a transaction.

Key operations are crash-safe: a ``key_operations`` row (pending) is committed *before* Deepgram is
called, and its id travels in the new key's tags (and comment). Whoever finds a pending operation
later — a re-run of the same command, a rotate, a reinstate — lists the project's keys and adopts a key
carrying that id instead of creating a second one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection as DB
from sqlalchemy import Engine, Row
from sqlalchemy.exc import IntegrityError

from keyledger.core.clock import Clock
from keyledger.core.crypto import Cipher, associated_data
from keyledger.core.errors import Conflict, Invalid, ProviderAuthError, ProviderError
from keyledger.core.faults import fault_point
from keyledger.core.ids import new_id
from keyledger.customers import store
from keyledger.customers.model import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_BASE_URL,
    KEY_STATUSES,
    Connection,
    Customer,
    IssuedKey,
    Key,
    carries_operation,
    key_comment,
    key_tags,
    parse_ttl,
    validate_base_url,
    validate_connection_name,
    validate_currency,
    validate_customer_name,
    validate_email,
    validate_env_var,
    validate_external_id,
    validate_scopes,
    validate_timezone,
)
from keyledger.db.outbox import enqueue
from keyledger.provider.port import Provider, ProviderCredentials, ProviderKey


class Deps(Protocol):
    """What the services need from the wiring (``keyledger.bootstrap.Runtime`` provides it)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def cipher(self) -> Cipher: ...

    @property
    def clock(self) -> Clock: ...

    def make_provider(self, credentials: ProviderCredentials) -> Provider: ...

    def provider_for(self, connection: Row | str) -> Provider: ...


@contextmanager
def _tx(engine: Engine) -> Iterator[DB]:
    with engine.begin() as db:
        yield db


def key_secret_ad(key_id: str) -> bytes:
    return associated_data("keys", key_id, "secret")


def connection_key_ad(connection_id: str) -> bytes:
    return associated_data("connections", connection_id, "api_key")


def key_event(key: Key) -> dict[str, Any]:
    """The payload of ``key.created`` / ``key.revoked`` (never the secret)."""
    return {
        "key_id": key.id,
        "customer_id": key.customer_id,
        "connection_id": key.connection_id,
        "api_key_id": key.api_key_id,
        "scopes": list(key.scopes),
        "status": key.status,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def customer_event(customer: Customer, **extra: Any) -> dict[str, Any]:
    return {
        "customer_id": customer.id,
        "external_id": customer.external_id,
        "status": customer.status,
        **extra,
    }


def suspend_in(db: DB, customer: Customer, *, at: datetime, actor: str, details: dict[str, Any]) -> Customer:
    """Suspend inside the caller's transaction: status, audit and ``customer.suspended`` together.
    Returns the customer unchanged when already suspended (nothing is written, no event)."""
    if customer.status == "suspended":
        return customer
    customer = store.update_customer(db, customer.id, {"status": "suspended", "updated_at": at})
    store.write_audit(db, at=at, actor=actor, action="customer.suspend", subject=customer.id, details=details)
    enqueue(db, "customer.suspended", customer_event(customer, **details), at)
    return customer


def connection_credentials(
    row: Row, cipher: Cipher | None, environ: Mapping[str, str]
) -> ProviderCredentials:
    """The Deepgram credentials of a connection row: its stored (encrypted) key or its env variable."""
    m = row._mapping
    if m["api_key_ciphertext"] is not None:
        if cipher is None:
            raise Invalid("no secret key configured (run `keyledger init` or set KEYLEDGER_SECRET_KEY)")
        api_key = cipher.decrypt(m["api_key_ciphertext"], connection_key_ad(m["id"]))
    else:
        var = m["api_key_env"] or DEFAULT_API_KEY_ENV
        api_key = environ.get(var, "")
        if not api_key:
            raise Invalid(f"connection {m['name']!r} reads its Deepgram key from ${var}, which is not set")
    return ProviderCredentials(base_url=m["base_url"], project_id=m["project_id"], api_key=api_key)


# ============================================================================ customers


@dataclass
class CustomerService:
    deps: Deps
    actor: str = "cli"

    def add(
        self,
        name: str,
        *,
        external_id: str,
        email: str | None = None,
        plan: str | None = None,
        currency: str = "USD",
        timezone: str = "UTC",
    ) -> Customer:
        now = self.deps.clock.now()
        values = {
            "id": new_id("cus"),
            "external_id": validate_external_id(external_id),
            "name": validate_customer_name(name),
            "email": validate_email(email),
            "plan": (plan or "").strip() or None,
            "currency": validate_currency(currency),
            "timezone": validate_timezone(timezone),
            "status": "active",
            "billing_mode": "managed",
            "created_at": now,
            "updated_at": now,
        }
        with _tx(self.deps.engine) as db:
            customer = store.insert_customer(db, values)
            store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="customer.create",
                subject=customer.id,
                details={"external_id": customer.external_id},
            )
        return customer

    def get(self, ref: str) -> Customer:
        with _tx(self.deps.engine) as db:
            return store.get_customer(db, ref)

    def list(self, *, status: str | None = None) -> list[Customer]:
        with _tx(self.deps.engine) as db:
            return store.list_customers(db, status=status)

    def update(self, ref: str, **changes: Any) -> Customer:
        validators = {
            "name": validate_customer_name,
            "external_id": validate_external_id,
            "email": validate_email,
            "plan": lambda v: (v or "").strip() or None,
            "currency": validate_currency,
            "timezone": validate_timezone,
        }
        unknown = set(changes) - set(validators)
        if unknown:
            raise Invalid(f"cannot update {', '.join(sorted(unknown))}")
        values = {k: validators[k](v) for k, v in changes.items() if v is not None}
        if not values:
            raise Invalid(
                "nothing to update (give at least one of --name, --email, --plan, --currency, --timezone)"
            )
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            before = store.get_customer(db, ref)
            changed = {k: v for k, v in values.items() if getattr(before, k) != v}
            if not changed:
                return before
            customer = store.update_customer(db, before.id, {**changed, "updated_at": now})
            store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="customer.update",
                subject=customer.id,
                details={k: {"from": getattr(before, k), "to": v} for k, v in changed.items()},
            )
        return customer

    def suspend(self, ref: str, *, revoke_keys: bool = True) -> tuple[Customer, list[Key]]:
        """Suspend a customer and (by default) revoke their Deepgram keys, so they stop running up costs.

        The status changes first (no new keys can be created), then each active key is revoked. If
        Deepgram fails midway, running suspend again finishes the job.
        """
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            customer = store.get_customer(db, ref, for_update=True)
            customer = suspend_in(
                db, customer, at=now, actor=self.actor, details={"revoke_keys": revoke_keys}
            )
            active = store.list_keys(db, customer_id=customer.id, status="active") if revoke_keys else []
        keys = KeyService(self.deps, actor=self.actor)
        revoked = [keys.revoke(k.id, reason="suspend")[0] for k in active]
        return customer, revoked

    def reinstate(self, ref: str, *, recreate_keys: bool = True) -> tuple[Customer, list[IssuedKey]]:
        """Reactivate a customer and (by default) issue a replacement for each key the suspension revoked."""
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            customer = store.get_customer(db, ref, for_update=True)
            if customer.status != "active":
                customer = store.update_customer(db, customer.id, {"status": "active", "updated_at": now})
                store.write_audit(
                    db,
                    at=now,
                    actor=self.actor,
                    action="customer.reinstate",
                    subject=customer.id,
                    details={"recreate_keys": recreate_keys},
                )
                enqueue(db, "customer.reinstated", customer_event(customer, recreate_keys=recreate_keys), now)
        issued: list[IssuedKey] = []
        if recreate_keys:
            issued = KeyService(self.deps, actor=self.actor).replace_suspended_keys(customer.id)
        return customer, issued


# ============================================================================ connections


@dataclass
class ConnectionService:
    deps: Deps
    actor: str = "cli"
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def add(
        self,
        name: str,
        *,
        project_id: str,
        api_key_env: str | None = None,
        base_url: str | None = None,
        store_key: bool = False,
    ) -> Connection:
        name = validate_connection_name(name)
        var = validate_env_var(api_key_env or DEFAULT_API_KEY_ENV)
        url = validate_base_url(base_url or DEFAULT_BASE_URL)
        project_id = (project_id or "").strip()
        if not project_id:
            raise Invalid("--project-id must not be empty")
        api_key = self.environ.get(var, "")
        if not api_key:
            raise Invalid(
                f"${var} is not set: put the Deepgram API key in it (or name another with --api-key-env)"
            )
        cipher = self.deps.cipher if store_key else None  # fail before any side effect if unconfigured
        with _tx(self.deps.engine) as db:
            if any(c.name == name for c in store.list_connections(db)):
                raise Conflict(f"a connection named {name!r} already exists")
        provider = self.deps.make_provider(
            ProviderCredentials(base_url=url, project_id=project_id, api_key=api_key)
        )
        try:
            report = provider.verify_access()
        finally:
            provider.close()
        if report.missing:
            raise Invalid(
                f"the key in ${var} lacks {', '.join(report.missing)} on project {project_id}: "
                "keyledger must "
                "manage keys and read usage and billing (use a key with the admin or owner role)"
            )
        now = self.deps.clock.now()
        conn_id = new_id("con")
        values: dict[str, Any] = {
            "id": conn_id,
            "name": name,
            "kind": "managed",
            "project_id": project_id,
            "base_url": url,
            "api_key_env": None if store_key else var,
            "api_key_ciphertext": cipher.encrypt(api_key, connection_key_ad(conn_id)) if cipher else None,
            "customer_id": None,
            "status": "active",
            "created_at": now,
        }
        with _tx(self.deps.engine) as db:
            connection = store.insert_connection(db, values)
            store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="connection.create",
                subject=conn_id,
                details={
                    "name": name,
                    "project_id": project_id,
                    "base_url": url,
                    "key_source": "stored" if store_key else f"env:{var}",
                },
            )
        return connection

    def list(self) -> list[Connection]:
        with _tx(self.deps.engine) as db:
            return store.list_connections(db)

    def get(self, ref: str) -> Connection:
        with _tx(self.deps.engine) as db:
            return store.get_connection(db, ref)


# ============================================================================ keys

_OP_SUFFIX = re.compile(r"\s*\[op:[^\]]*\]\s*$")


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class KeyService:
    deps: Deps
    actor: str = "cli"
    notes: list[str] = field(default_factory=list)  # human notes for the CLI (resumed operations etc.)

    # ------------------------------------------------------------------ queries

    def _effective(self, key: Key) -> Key:
        """An active key past its expiry date is shown as ``expired`` (Deepgram no longer accepts it)."""
        if key.status == "active" and key.expires_at is not None and key.expires_at <= self.deps.clock.now():
            return replace(key, status="expired")
        return key

    def list(self, *, customer: str | None = None, status: str | None = None) -> list[Key]:
        if status is not None and status not in KEY_STATUSES:
            raise Invalid(f"key status {status!r} is not one of {', '.join(KEY_STATUSES)}")
        with _tx(self.deps.engine) as db:
            customer_id = store.get_customer(db, customer).id if customer else None
            only_revoked = "revoked" if status == "revoked" else None
            stored = store.list_keys(db, customer_id=customer_id, status=only_revoked)
        result = [self._effective(k) for k in stored]
        return [k for k in result if status is None or k.status == status]

    def get(self, ref: str) -> Key:
        with _tx(self.deps.engine) as db:
            return self._effective(store.get_key(db, ref))

    def secret(self, ref: str) -> str:
        """The decrypted secret of an active key (audited: it hands a credential out)."""
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            key = self._effective(store.get_key(db, ref))
            if key.status != "active":
                raise Conflict(f"key {key.id} is {key.status}")
            blob = store.key_secret_ciphertext(db, key.id)
            if blob is None:
                raise Conflict(
                    f"key {key.id} has no stored secret (adopted after an interrupted create); "
                    f"rotate it: keyledger keys rotate {key.id}"
                )
            secret = self.deps.cipher.decrypt(blob, key_secret_ad(key.id))
            store.write_audit(db, at=now, actor=self.actor, action="key.secret_read", subject=key.id)
        return secret

    def owner_of(self, connection_id: str, api_key_id: str) -> tuple[str, str] | None:
        """``(key_id, customer_id)`` of a Deepgram key on a connection, or None (unattributed)."""
        with _tx(self.deps.engine) as db:
            return store.key_owners(db, connection_id).get(api_key_id)

    # ------------------------------------------------------------------ create

    def create(
        self,
        customer: str,
        *,
        connection: str | None = None,
        ttl: str | None = None,
        scopes: list[str] | None = None,
        comment: str | None = None,
    ) -> IssuedKey:
        ttl_delta = parse_ttl(ttl)
        scope_list = validate_scopes(scopes)
        _ = self.deps.cipher  # the secret must be storable before Deepgram is asked for it
        with _tx(self.deps.engine) as db:
            cust = store.get_customer(db, customer)
            self._require_active(cust)
            conn = (
                store.get_connection(db, connection) if connection else store.default_managed_connection(db)
            )
            conn_row = store.connection_row(db, conn.id)
            if conn.status != "active":
                raise Conflict(f"connection {conn.name!r} is {conn.status}")
            pending = store.pending_operations(db, kind="create", customer_id=cust.id, connection_id=conn.id)
        if pending:
            op = pending[0]
            self.notes.append(f"resuming interrupted key creation {op['id']} for {cust.external_id}")
        else:
            self._preflight(conn_row)  # wrong key / unreachable Deepgram: fail before anything is written
            with _tx(self.deps.engine) as db:
                cust = store.get_customer(db, cust.id)
                self._require_active(cust)
                op = self._new_create_op(
                    db, cust, conn, kind="create", scopes=scope_list, comment=comment, ttl=ttl_delta
                )
        return self._run_create(op, cust, conn, conn_row, resumed=bool(pending), finish=True)

    def _preflight(self, conn_row: Row) -> None:
        """A cheap read with the connection's key, so a bad key or an unreachable Deepgram fails the
        command before any key operation is recorded."""
        provider = self.deps.provider_for(conn_row)
        try:
            provider.list_keys()
        finally:
            provider.close()

    def _require_active(self, cust: Customer) -> None:
        if cust.status != "active":
            raise Conflict(
                f"customer {cust.external_id} is {cust.status}; "
                f"reinstate first: keyledger customers reinstate {cust.id}"
            )

    def _new_create_op(
        self,
        db: DB,
        cust: Customer,
        conn: Connection,
        *,
        kind: str,
        scopes: tuple[str, ...],
        comment: str | None,
        ttl: timedelta | None,
        key_id: str | None = None,
        replaces: str | None = None,
    ) -> dict[str, Any]:
        now = self.deps.clock.now()
        op_id = new_id("op")
        request = {
            "comment": key_comment(cust.name, cust.external_id, op_id, comment),
            "scopes": list(scopes),
            "tags": key_tags(cust.external_id, op_id),
            "expires_at": (now + ttl).isoformat() if ttl else None,
            "replaces": replaces,
        }
        return store.insert_operation(
            db,
            {
                "id": op_id,
                "kind": kind,
                "customer_id": cust.id,
                "connection_id": conn.id,
                "key_id": key_id,
                "state": "pending",
                "request": request,
                "created_at": now,
            },
        )

    def _find_by_operation(self, provider: Provider, op_id: str) -> ProviderKey | None:
        for pk in provider.list_keys():
            if carries_operation(pk.tags, pk.comment, op_id):
                return pk
        return None

    def _run_create(
        self,
        op: dict[str, Any],
        cust: Customer,
        conn: Connection,
        conn_row: Row,
        *,
        resumed: bool,
        finish: bool,
    ) -> IssuedKey:
        """Bring a create (or the create half of a rotate) to a ledger key, exactly once at Deepgram."""
        with _tx(self.deps.engine) as db:
            existing = store.key_by_operation(db, op["id"])
        if existing is not None:  # the key reached the ledger; only the bookkeeping may be missing
            blob = None
            with _tx(self.deps.engine) as db:
                blob = store.key_secret_ciphertext(db, existing.id)
                if finish:
                    store.finish_operation(
                        db, op["id"], state="done", at=self.deps.clock.now(), key_id=existing.id
                    )
            secret = self.deps.cipher.decrypt(blob, key_secret_ad(existing.id)) if blob is not None else None
            return IssuedKey(existing, secret)
        request = op["request"]
        provider = self.deps.provider_for(conn_row)
        try:
            found = self._find_by_operation(provider, op["id"]) if resumed else None
            if found is not None:
                return self._adopt(op, cust, conn, found, finish=finish)
            try:
                created = provider.create_key(
                    comment=request["comment"],
                    scopes=list(request["scopes"]),
                    tags=list(request["tags"]),
                    expires_at=_parse_iso(request.get("expires_at")),
                )
            except ProviderError as exc:
                # Unless Deepgram refused outright, the create may have happened without an answer
                # reaching us: look before giving up.
                found = None
                if not isinstance(exc, ProviderAuthError):
                    try:
                        found = self._find_by_operation(provider, op["id"])
                    except ProviderError:
                        raise ProviderError(
                            f"{exc}; whether the key was created is unknown: run the same command again "
                            "to finish"
                        ) from None
                if found is not None:
                    return self._adopt(op, cust, conn, found, finish=finish)
                with _tx(self.deps.engine) as db:
                    store.finish_operation(db, op["id"], state="failed", at=self.deps.clock.now())
                    store.write_audit(
                        db,
                        at=self.deps.clock.now(),
                        actor=self.actor,
                        action="key.create_failed",
                        subject=op["id"],
                        details={"customer_id": cust.id, "error": str(exc)[:300]},
                    )
                raise
        finally:
            provider.close()
        fault_point("keys.after_provider_create")
        now = self.deps.clock.now()
        key_id = new_id("key")
        try:
            key = self._record_key(
                op,
                cust,
                conn,
                created,
                key_id=key_id,
                secret_ciphertext=self.deps.cipher.encrypt(created.secret, key_secret_ad(key_id)),
                created_at=now,
                now=now,
                finish=finish,
                action="key.create",
                audit_scopes=True,
            )
        except IntegrityError:
            # A concurrent run of the same operation recorded its key first: ours is a duplicate.
            return self._drop_duplicate(op, conn_row, created.api_key_id)
        return IssuedKey(key, created.secret)

    def _record_key(
        self,
        op: dict[str, Any],
        cust: Customer,
        conn: Connection,
        made: ProviderKey,
        *,
        key_id: str,
        secret_ciphertext: bytes | None,
        created_at: datetime,
        now: datetime,
        finish: bool,
        action: str,
        audit_scopes: bool = False,
    ) -> Key:
        """In one transaction: the ledger key for the Deepgram key ``made`` by operation ``op``, the
        operation finished (with ``finish``), the audit entry ``action`` (with the key's scopes when
        ``audit_scopes``) and the ``key.created`` event."""
        request = op["request"]
        with _tx(self.deps.engine) as db:
            key = store.insert_key(
                db,
                {
                    "id": key_id,
                    "customer_id": cust.id,
                    "connection_id": conn.id,
                    "api_key_id": made.api_key_id,
                    "secret_ciphertext": secret_ciphertext,
                    "comment": request["comment"],
                    "scopes": list(made.scopes or request["scopes"]),
                    "tags": list(request["tags"]),
                    "operation_id": op["id"],
                    "status": "active",
                    "created_at": created_at,
                    "expires_at": _parse_iso(request.get("expires_at")) or made.expires_at,
                    "revoked_at": None,
                },
            )
            if finish:
                store.finish_operation(db, op["id"], state="done", at=now, key_id=key_id)
            details: dict[str, Any] = {
                "customer_id": cust.id,
                "connection": conn.name,
                "api_key_id": made.api_key_id,
                "operation_id": op["id"],
            }
            if audit_scopes:
                details["scopes"] = list(key.scopes)
            details["replaces"] = request.get("replaces")
            store.write_audit(db, at=now, actor=self.actor, action=action, subject=key_id, details=details)
            enqueue(db, "key.created", key_event(key), now)
        return key

    def _drop_duplicate(self, op: dict[str, Any], conn_row: Row, api_key_id: str) -> IssuedKey:
        provider = self.deps.provider_for(conn_row)
        try:
            provider.delete_key(api_key_id)
        finally:
            provider.close()
        with _tx(self.deps.engine) as db:
            winner = store.key_by_operation(db, op["id"])
            if winner is None:
                raise Conflict(f"key operation {op['id']} clashed with another run; run the command again")
            blob = store.key_secret_ciphertext(db, winner.id)
        secret = self.deps.cipher.decrypt(blob, key_secret_ad(winner.id)) if blob is not None else None
        self.notes.append(f"another run finished operation {op['id']} at the same time; using its key")
        return IssuedKey(winner, secret)

    def _adopt(
        self, op: dict[str, Any], cust: Customer, conn: Connection, found: ProviderKey, *, finish: bool
    ) -> IssuedKey:
        """Record a key Deepgram created for this operation in a run that never committed it."""
        now = self.deps.clock.now()
        key_id = new_id("key")
        key = self._record_key(
            op,
            cust,
            conn,
            found,
            key_id=key_id,
            secret_ciphertext=None,
            created_at=found.created or now,
            now=now,
            finish=finish,
            action="key.adopt",
        )
        self.notes.append(
            f"adopted Deepgram key {found.api_key_id} created by interrupted operation {op['id']}; "
            "its secret "
            f"was never stored, so rotate it to get a usable one: keyledger keys rotate {key_id}"
        )
        return IssuedKey(key, None, adopted=True)

    # ------------------------------------------------------------------ rotate / revoke

    def rotate(self, ref: str) -> tuple[IssuedKey, Key]:
        """Create the replacement first, then delete the old key: the customer always has a working key."""
        _ = self.deps.cipher
        with _tx(self.deps.engine) as db:
            old = store.get_key(db, ref)
            cust = store.get_customer(db, old.customer_id)
            conn = store.get_connection(db, old.connection_id)
            conn_row = store.connection_row(db, old.connection_id)
            pending = store.pending_operations(db, kind="rotate", key_id=old.id)
        if pending:
            op = pending[0]
            self.notes.append(f"resuming interrupted rotation {op['id']} of {old.id}")
        else:
            if old.status != "active":
                raise Conflict(
                    f"key {old.id} is {old.status}; create a new one: keyledger keys create {cust.id}"
                )
            self._require_active(cust)
            self._preflight(conn_row)
            ttl = (old.expires_at - old.created_at) if old.expires_at else None
            with _tx(self.deps.engine) as db:
                op = self._new_create_op(
                    db,
                    cust,
                    conn,
                    kind="rotate",
                    scopes=old.scopes,
                    comment=_OP_SUFFIX.sub("", old.comment or "") or None,
                    ttl=ttl,
                    key_id=old.id,
                    replaces=old.id,
                )
        issued = self._run_create(op, cust, conn, conn_row, resumed=bool(pending), finish=False)
        fault_point("keys.rotate_after_create")
        provider = self.deps.provider_for(conn_row)
        try:
            provider.delete_key(old.api_key_id)
        finally:
            provider.close()
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            if store.mark_key_revoked(db, old.id, now):
                enqueue(db, "key.revoked", key_event(store.get_key(db, old.id)), now)
            store.finish_operation(db, op["id"], state="done", at=now)
            store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="key.rotate",
                subject=old.id,
                details={"customer_id": cust.id, "new_key_id": issued.key.id, "operation_id": op["id"]},
            )
            old = store.get_key(db, old.id)
        return issued, old

    def revoke(self, ref: str, *, reason: str = "revoke") -> tuple[Key, bool]:
        """Delete the key at Deepgram and mark it revoked (the row stays, so past usage stays attributed).

        Returns ``(key, already_revoked)``. A key already deleted at Deepgram revokes fine.
        """
        with _tx(self.deps.engine) as db:
            key = store.get_key(db, ref)
            if key.status == "revoked":
                return key, True
            conn_row = store.connection_row(db, key.connection_id)
        # Deleting is idempotent at Deepgram (a key already gone counts as deleted), so the operation
        # is recorded with the outcome: a crash before the commit is finished by running revoke again.
        provider = self.deps.provider_for(conn_row)
        try:
            provider.delete_key(key.api_key_id)
        finally:
            provider.close()
        fault_point("keys.revoke_after_delete")
        now = self.deps.clock.now()
        with _tx(self.deps.engine) as db:
            if not store.mark_key_revoked(db, key.id, now):
                # A concurrent revoke of the same key committed first: it recorded the operation and event.
                return store.get_key(db, key.id), True
            op = store.insert_operation(
                db,
                {
                    "id": new_id("op"),
                    "kind": "revoke",
                    "customer_id": key.customer_id,
                    "connection_id": key.connection_id,
                    "key_id": key.id,
                    "state": "done",
                    "request": {"reason": reason, "api_key_id": key.api_key_id},
                    "created_at": now,
                    "finished_at": now,
                },
            )
            store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="key.revoke",
                subject=key.id,
                details={
                    "customer_id": key.customer_id,
                    "api_key_id": key.api_key_id,
                    "reason": op["request"].get("reason", reason),
                    "operation_id": op["id"],
                },
            )
            key = store.get_key(db, key.id)
            enqueue(db, "key.revoked", key_event(key) | {"reason": reason}, now)
        return key, False

    def replace_suspended_keys(self, customer_id: str) -> list[IssuedKey]:
        """One new key for each key that a suspension revoked and that has no replacement yet."""
        with _tx(self.deps.engine) as db:
            cust = store.get_customer(db, customer_id)
            self._require_active(cust)
            ops = store.operations_for_customer(db, cust.id)
            replaced = {
                o["request"].get("replaces"): o
                for o in ops
                if o["kind"] == "create" and o["state"] != "failed"
            }
            todo: list[tuple[dict[str, Any], bool, Connection, Row]] = []
            for o in ops:
                if o["kind"] != "revoke" or o["state"] != "done" or o["request"].get("reason") != "suspend":
                    continue
                old = store.get_key(db, o["key_id"])
                conn = store.get_connection(db, old.connection_id)
                prior = replaced.get(old.id)
                if prior is not None and prior["state"] == "done":
                    continue
                if prior is not None:  # pending: an interrupted reinstate
                    todo.append((prior, True, conn, store.connection_row(db, conn.id)))
                    continue
                ttl = (old.expires_at - old.created_at) if old.expires_at else None
                op = self._new_create_op(
                    db,
                    cust,
                    conn,
                    kind="create",
                    scopes=old.scopes,
                    comment=_OP_SUFFIX.sub("", old.comment or "") or None,
                    ttl=ttl,
                    replaces=old.id,
                )
                todo.append((op, False, conn, store.connection_row(db, conn.id)))
        return [
            self._run_create(op, cust, conn, row, resumed=resumed, finish=True)
            for op, resumed, conn, row in todo
        ]
