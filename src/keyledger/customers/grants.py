"""Browser tokens: short-lived Deepgram tokens (``POST /v1/auth/grant``) minted from a customer's own key,
so whatever a browser does with the token is attributed, at Deepgram, to that customer's key.

Deepgram only grants from a key that holds a role (``member`` or above); a customer's data-plane keys
have ``usage:write`` only. So each customer gets one dedicated *grant key* with the ``member`` role,
created on first use like any other key of theirs (crash-safe, tagged, attributed to them, revoked on
suspension and re-created on reinstatement). Its secret never leaves keyledger: it only signs grants,
and ``credentials`` hands out the customer's data-plane key, never this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyledger.core.errors import Invalid, KeyledgerError
from keyledger.customers import store
from keyledger.customers.model import Key
from keyledger.customers.service import Deps, KeyService
from keyledger.provider.port import Grant, ProviderCredentials

ROLE_SCOPES = ("member", "admin", "owner")
GRANT_SCOPES = ["member"]
GRANT_COMMENT = "keyledger browser tokens"
MIN_TTL, MAX_TTL = 1, 3600  # Deepgram's limits for ttl_seconds


class CustomerSuspended(KeyledgerError):
    http_status = 403
    title = "Customer suspended"


def is_grant_key(key: Key) -> bool:
    return any(s in ROLE_SCOPES for s in key.scopes)


@dataclass
class GrantService:
    deps: Deps
    actor: str = "cli"

    def _grant_key(self, customer_id: str) -> Key:
        keys = KeyService(self.deps, actor=self.actor)
        usable = [
            k for k in keys.list(customer=customer_id, status="active")
            if is_grant_key(k) and k.has_secret
        ]
        if usable:
            return usable[-1]
        return keys.create(customer_id, scopes=list(GRANT_SCOPES), comment=GRANT_COMMENT).key

    def grant(self, customer: str, *, ttl_seconds: int | None = None) -> Grant:
        if ttl_seconds is not None and not MIN_TTL <= int(ttl_seconds) <= MAX_TTL:
            raise Invalid(f"ttl_seconds must be between {MIN_TTL} and {MAX_TTL} (Deepgram's limit)")
        with self.deps.engine.begin() as db:
            cust = store.get_customer(db, customer)
        if cust.status != "active":
            raise CustomerSuspended(
                f"customer {cust.external_id} is suspended: no browser tokens until it is reinstated "
                f"(keyledger customers reinstate {cust.id})"
            )
        key = self._grant_key(cust.id)
        secret = KeyService(self.deps, actor=self.actor).secret(key.id)
        with self.deps.engine.begin() as db:
            row = store.connection_row(db, key.connection_id)
        m = row._mapping
        provider = self.deps.make_provider(
            ProviderCredentials(base_url=m["base_url"], project_id=m["project_id"], api_key=secret)
        )
        try:
            grant = provider.grant_token(ttl_seconds=ttl_seconds)
        finally:
            provider.close()
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            store.write_audit(
                db, at=now, actor=self.actor, action="token.grant", subject=cust.id,
                details={"key_id": key.id, "api_key_id": key.api_key_id, "expires_in": grant.expires_in},
            )
        return grant
