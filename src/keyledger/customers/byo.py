"""Bring your own Deepgram account (PRODUCT §8): a customer connects their own Deepgram project.

connect: the key the customer hands over is used once — to check it opens the project and to create
a dedicated key there (``usage:write``, ``usage:read``, tagged ``keyledger``/``customer:…``/``byo:…``) —
then dropped: it is never written to the database, a log, an audit entry or a response. Only the minted
key is stored, encrypted with the connection's associated data, on a ``connections`` row of kind
``byo`` that names the customer. The customer's ``billing_mode`` becomes ``byo``: usage synced from
their project is theirs (every record of the connection belongs to them) and is priced at zero unless
their plan says ``byo_pricing: plan``.

disconnect: syncing stops (status ``disconnected``), the stored key is erased, the customer goes back
to ``managed``. The minted key is deleted in the customer's project: with a key the caller supplies for
that purpose (used once, discarded) or, failing that, with the minted key itself; if Deepgram refuses
(a usage-only key may not delete keys), the answer names the key so the customer can delete it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from keyledger.core.errors import Conflict, Invalid, ProviderAuthError, ProviderError
from keyledger.core.ids import new_id
from keyledger.customers import store
from keyledger.customers.model import DEFAULT_BASE_URL, KEY_TAG, Customer, validate_base_url
from keyledger.customers.service import Deps, connection_key_ad
from keyledger.db.tables_customers import connections
from keyledger.provider.port import ProviderCredentials

BYO_SCOPES = ["usage:write", "usage:read"]
BYO_TAG_PREFIX = "byo:"


@dataclass(frozen=True)
class ByoResult:
    customer: Customer
    connection_id: str | None
    api_key_id: str | None
    minted_key_deleted: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.customer.to_json()
        out["byo_connection"] = (
            {"connection_id": self.connection_id, "api_key_id": self.api_key_id}
            if self.connection_id else None
        )
        if self.minted_key_deleted is not None:
            out["minted_key_deleted"] = self.minted_key_deleted
        return out


def _active_byo(db, customer_id: str):
    return db.execute(
        select(connections).where(
            connections.c.customer_id == customer_id,
            connections.c.kind == "byo",
            connections.c.status == "active",
        )
    ).first()


def _minted_key_id(db, connection_id: str) -> str | None:
    for entry in reversed(store.list_audit(db, subject=connection_id)):
        if entry["action"] == "byo.connect":
            return (entry["details"] or {}).get("api_key_id")
    return None


@dataclass
class ByoService:
    deps: Deps
    actor: str = "cli"
    base_url: str | None = None  # default: the managed connection's (the same Deepgram)

    def _base_url(self, db) -> str:
        if self.base_url:
            return validate_base_url(self.base_url)
        managed = [c for c in store.list_connections(db, kind="managed") if c.status == "active"]
        return managed[0].base_url if managed else DEFAULT_BASE_URL

    def status(self, customer: str) -> ByoResult:
        with self.deps.engine.connect() as db:
            cust = store.get_customer(db, customer)
            row = _active_byo(db, cust.id)
            return ByoResult(cust, row.id if row else None, _minted_key_id(db, row.id) if row else None)

    def connect(self, customer: str, *, project_id: str, api_key: str) -> ByoResult:
        project_id = (project_id or "").strip()
        if not project_id or len(project_id) > 100:
            raise Invalid("project_id must be 1 to 100 characters (your Deepgram project's id)")
        if not (api_key or "").strip():
            raise Invalid("api_key must not be empty")
        cipher = self.deps.cipher  # fail before touching Deepgram when secrets cannot be stored
        with self.deps.engine.connect() as db:
            cust = store.get_customer(db, customer)
            if _active_byo(db, cust.id) is not None:
                raise Conflict(
                    f"customer {cust.external_id} already has its own Deepgram account connected; "
                    "disconnect it first (DELETE …/byo-connection)"
                )
            base_url = self._base_url(db)
        conn_id = new_id("con")
        given = self.deps.make_provider(
            ProviderCredentials(base_url=base_url, project_id=project_id, api_key=api_key.strip())
        )
        try:
            try:
                given.list_keys()
            except ProviderError as exc:
                if not isinstance(exc, ProviderAuthError) and " 404 " not in str(exc):
                    raise  # Deepgram down or unreachable: a 502, retry later
                raise Invalid(
                    f"Deepgram refused the key for project {project_id} (or the key is not of that "
                    "project): give a key of that project with the admin or owner role (it is used once "
                    "and not stored)"
                ) from None
            try:
                minted = given.create_key(
                    comment=f"keyledger usage reader for {cust.name} ({cust.external_id}) [{conn_id}]",
                    scopes=list(BYO_SCOPES),
                    tags=[KEY_TAG, f"customer:{cust.external_id}", f"{BYO_TAG_PREFIX}{conn_id}"],
                )
            except ProviderAuthError:
                raise Invalid(
                    f"the key cannot create keys in project {project_id}: it needs the admin or owner "
                    "role (keys:write, usage:read)"
                ) from None
        finally:
            given.close()
        # The submitted key goes out of scope here; from now on only the minted key is used.
        del api_key, given
        now = self.deps.clock.now()
        try:
            with self.deps.engine.begin() as db:
                cust = store.get_customer(db, cust.id, for_update=True)
                if _active_byo(db, cust.id) is not None:
                    raise Conflict(f"customer {cust.external_id} was connected concurrently")
                store.insert_connection(
                    db,
                    {
                        "id": conn_id,
                        "name": f"byo-{conn_id}",
                        "kind": "byo",
                        "project_id": project_id,
                        "base_url": base_url,
                        "api_key_env": None,
                        "api_key_ciphertext": cipher.encrypt(minted.secret, connection_key_ad(conn_id)),
                        "customer_id": cust.id,
                        "status": "active",
                        "created_at": now,
                    },
                )
                cust = store.update_customer(db, cust.id, {"billing_mode": "byo", "updated_at": now})
                store.write_audit(
                    db, at=now, actor=self.actor, action="byo.connect", subject=conn_id,
                    details={"customer_id": cust.id, "project_id": project_id,
                             "api_key_id": minted.api_key_id, "scopes": list(BYO_SCOPES)},
                )
        except BaseException:
            self._delete_minted(base_url, project_id, minted.secret, minted.api_key_id)
            raise
        return ByoResult(cust, conn_id, minted.api_key_id)

    def _delete_minted(self, base_url: str, project_id: str, key: str, api_key_id: str) -> bool:
        provider = self.deps.make_provider(
            ProviderCredentials(base_url=base_url, project_id=project_id, api_key=key)
        )
        try:
            provider.delete_key(api_key_id)
            return True
        except ProviderError:
            return False
        finally:
            provider.close()

    def disconnect(self, customer: str, *, api_key: str | None = None) -> ByoResult:
        with self.deps.engine.connect() as db:
            cust = store.get_customer(db, customer)
            row = _active_byo(db, cust.id)
            if row is None:
                raise Conflict(f"customer {cust.external_id} has no Deepgram account of its own connected")
            minted_id = _minted_key_id(db, row.id)
        m = row._mapping
        deleted = False
        if minted_id:
            if api_key and api_key.strip():
                deleted = self._delete_minted(m["base_url"], m["project_id"], api_key.strip(), minted_id)
            if not deleted and m["api_key_ciphertext"] is not None:
                minted_secret = self.deps.cipher.decrypt(m["api_key_ciphertext"], connection_key_ad(row.id))
                deleted = self._delete_minted(m["base_url"], m["project_id"], minted_secret, minted_id)
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            db.execute(
                update(connections)
                .where(connections.c.id == row.id)
                .values(status="disconnected", api_key_ciphertext=None)
            )
            cust = store.update_customer(db, cust.id, {"billing_mode": "managed", "updated_at": now})
            store.write_audit(
                db, at=now, actor=self.actor, action="byo.disconnect", subject=row.id,
                details={"customer_id": cust.id, "api_key_id": minted_id, "minted_key_deleted": deleted},
            )
        return ByoResult(cust, None, minted_id, minted_key_deleted=deleted)


__all__ = ["ByoService", "ByoResult", "BYO_SCOPES"]
