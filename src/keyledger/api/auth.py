"""Authentication and scope.

``Authorization: Bearer <token>``: an admin token (everything) or a portal token (one customer). A missing,
unknown, revoked or expired token is 401. Every route that takes an id resolves it *within the caller's
scope*: an object of another customer is 404 with the same message as one that does not exist (never 403,
never data). Admin-only routes answer 403 to a portal token only for the portal's own customer.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keyledger.api.problems import ApiError
from keyledger.core.errors import NotFound
from keyledger.customers import store as customer_store
from keyledger.customers.model import Customer
from keyledger.customers.tokens import Principal, TokenService

bearer = HTTPBearer(auto_error=False, description="An admin token (kla_…) or a portal token (klp_…).")

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="keyledger"'}


def runtime(request: Request):
    return request.app.state.runtime


def principal(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <admin or portal token>'",
                       UNAUTHORIZED)
    found = TokenService(runtime(request)).authenticate(creds.credentials)
    if found is None:
        raise ApiError(401, "the bearer token is unknown, revoked or expired", UNAUTHORIZED)
    request.state.principal = found
    return found


def admin(p: Principal = Depends(principal)) -> Principal:
    if not p.is_admin:
        raise ApiError(403, "this endpoint needs an admin token; a portal token cannot use it")
    return p


def customer_not_found(ref: str) -> NotFound:
    return NotFound(f"customer {ref!r} not found (give its id or external id)")


def scoped_customer(request: Request, p: Principal, ref: str) -> Customer:
    """The customer ``ref`` (id or external id) if the caller may see it, else 404."""
    with runtime(request).engine.connect() as db:
        found = customer_store.find_customer(db, ref)
    if found is None or (not p.is_admin and found.id != p.customer_id):
        raise customer_not_found(ref)
    return found


def admin_for_customer(request: Request, p: Principal, ref: str) -> Customer:
    """Admin-only routes under a customer: foreign ids are 404 for a portal token, own ones 403."""
    cust = scoped_customer(request, p, ref)
    if not p.is_admin:
        raise ApiError(403, "this endpoint needs an admin token; a portal token cannot use it")
    return cust
