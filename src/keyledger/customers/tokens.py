"""Credentials of keyledger's own REST API: admin tokens and customer-scoped portal tokens.

Both are high-entropy random strings (256 bits) shown once; only their SHA-256 is stored, so a leaked
database reveals no usable token. A presented token is hashed and looked up by its hash, then compared
in constant time. Portal tokens belong to one customer and expire; revoked or expired tokens are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from keyledger.core.errors import Invalid, NotFound
from keyledger.core.ids import new_id
from keyledger.customers import store
from keyledger.customers.model import iso
from keyledger.customers.service import Deps
from keyledger.db.tables_api import admin_tokens, portal_tokens

ADMIN_PREFIX = "kla_"
PORTAL_PREFIX = "klp_"
DEFAULT_PORTAL_TTL = 3600
MAX_PORTAL_TTL = 30 * 24 * 3600


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AdminToken:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at else "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True)
class Principal:
    """Who is calling the API: an admin token, or a portal token scoped to one customer."""

    kind: str  # admin | portal
    token_id: str
    customer_id: str | None = None

    @property
    def actor(self) -> str:
        return f"admin-token:{self.token_id}" if self.kind == "admin" else f"portal-token:{self.token_id}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def _admin(row: Any) -> AdminToken:
    m = row._mapping
    return AdminToken(m["id"], m["name"], m["created_at"], m["revoked_at"], m["last_used_at"])


@dataclass
class TokenService:
    deps: Deps
    actor: str = "cli"

    # ------------------------------------------------------------------ admin tokens

    def create_admin(self, name: str) -> tuple[AdminToken, str]:
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise Invalid("admin token name must be 1 to 200 characters")
        token = _new_token(ADMIN_PREFIX)
        now = self.deps.clock.now()
        tid = new_id("adt")
        with self.deps.engine.begin() as db:
            db.execute(
                insert(admin_tokens).values(
                    id=tid, name=name, token_hash=token_hash(token), created_at=now
                )
            )
            store.write_audit(db, at=now, actor=self.actor, action="admin_token.create", subject=tid,
                              details={"name": name})
            row = db.execute(select(admin_tokens).where(admin_tokens.c.id == tid)).one()
        return _admin(row), token

    def list_admin(self) -> list[AdminToken]:
        with self.deps.engine.connect() as db:
            rows = db.execute(select(admin_tokens).order_by(admin_tokens.c.created_at, admin_tokens.c.id))
            return [_admin(r) for r in rows]

    def revoke_admin(self, ref: str) -> AdminToken:
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            rows = db.execute(
                select(admin_tokens).where((admin_tokens.c.id == ref) | (admin_tokens.c.name == ref))
            ).all()
            if not rows:
                raise NotFound(f"admin token {ref!r} not found (give its id or name; see admin-tokens list)")
            if len(rows) > 1:
                raise Invalid(f"several admin tokens are named {ref!r}; give the id")
            tok = _admin(rows[0])
            if tok.revoked_at is None:
                db.execute(update(admin_tokens).where(admin_tokens.c.id == tok.id).values(revoked_at=now))
                store.write_audit(db, at=now, actor=self.actor, action="admin_token.revoke", subject=tok.id)
            row = db.execute(select(admin_tokens).where(admin_tokens.c.id == tok.id)).one()
        return _admin(row)

    # ------------------------------------------------------------------ portal tokens

    def create_portal(self, customer: str, *, ttl_seconds: int | None = None) -> dict[str, Any]:
        ttl = DEFAULT_PORTAL_TTL if ttl_seconds is None else int(ttl_seconds)
        if not 1 <= ttl <= MAX_PORTAL_TTL:
            raise Invalid(f"ttl_seconds must be between 1 and {MAX_PORTAL_TTL} (30 days)")
        token = _new_token(PORTAL_PREFIX)
        now = self.deps.clock.now()
        expires = now + timedelta(seconds=ttl)
        tid = new_id("ptk")
        with self.deps.engine.begin() as db:
            cust = store.get_customer(db, customer)
            db.execute(
                insert(portal_tokens).values(
                    id=tid, customer_id=cust.id, token_hash=token_hash(token), created_by=self.actor,
                    created_at=now, expires_at=expires,
                )
            )
            store.write_audit(db, at=now, actor=self.actor, action="portal_token.create", subject=tid,
                              details={"customer_id": cust.id, "expires_at": expires.isoformat()})
        return {"id": tid, "customer_id": cust.id, "token": token, "expires_at": expires.isoformat()}

    def revoke_portal(self, token_id: str, *, customer_id: str | None = None) -> None:
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            q = select(portal_tokens).where(portal_tokens.c.id == token_id)
            if customer_id is not None:
                q = q.where(portal_tokens.c.customer_id == customer_id)
            row = db.execute(q).first()
            if row is None:
                raise NotFound(f"portal token {token_id!r} not found")
            if row.revoked_at is None:
                db.execute(update(portal_tokens).where(portal_tokens.c.id == token_id).values(revoked_at=now))
                store.write_audit(db, at=now, actor=self.actor, action="portal_token.revoke",
                                  subject=token_id, details={"customer_id": row.customer_id})

    # ------------------------------------------------------------------ authentication

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None (unknown, revoked or expired)."""
        if not token or len(token) > 200:
            return None
        digest = token_hash(token)
        now = self.deps.clock.now()
        with self.deps.engine.connect() as db:
            if token.startswith(ADMIN_PREFIX):
                row = db.execute(select(admin_tokens).where(admin_tokens.c.token_hash == digest)).first()
                if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
                    return None
                return Principal("admin", row.id)
            if token.startswith(PORTAL_PREFIX):
                row = db.execute(select(portal_tokens).where(portal_tokens.c.token_hash == digest)).first()
                if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
                    return None
                if row.expires_at <= now:
                    return None
                return Principal("portal", row.id, row.customer_id)
        return None
