"""``/customers/{id}/keys``: list (metadata only), create (the secret, once), rotate, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from keyledger.api import idempotency
from keyledger.api.auth import admin_for_customer, principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.pagination import Page, paginate
from keyledger.api.schemas import KeyCreate
from keyledger.core.errors import NotFound
from keyledger.customers.model import Customer, Key
from keyledger.customers.service import KeyService
from keyledger.customers.tokens import Principal

router = APIRouter(tags=["keys"])


def _own_key(request: Request, cust: Customer, key_ref: str) -> Key:
    try:
        key = KeyService(runtime(request)).get(key_ref)
    except NotFound:
        key = None
    if key is None or key.customer_id != cust.id:
        raise NotFound(f"key {key_ref!r} not found for customer {cust.id}")
    return key


@router.get("/customers/{customer_id}/keys", summary="The customer's keys (never their secrets)")
def list_keys(
    request: Request,
    customer_id: str,
    status: str | None = Query(None, description="active, revoked or expired"),
    page: Page = Depends(),
    p: Principal = Depends(principal),
):
    cust = scoped_customer(request, p, customer_id)
    keys = KeyService(runtime(request), actor=p.actor).list(customer=cust.id, status=status)
    return respond(paginate([k.to_json() for k in keys], page, key=lambda k: k["id"]))


@router.post(
    "/customers/{customer_id}/keys", status_code=201,
    summary="Create a Deepgram key for the customer; the answer carries its secret, once",
)
def create_key(request: Request, customer_id: str, body: KeyCreate | None = None,
               p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    body = body or KeyCreate()

    def produce():
        issued = KeyService(runtime(request), actor=p.actor).create(
            cust.id, connection=body.connection, ttl=body.ttl, scopes=body.scopes, comment=body.comment
        )
        return 201, issued.to_json()

    return idempotency.run(request, p, {"customer": cust.id, **body.model_dump()}, produce)


@router.post("/customers/{customer_id}/keys/{key_id}/rotate", status_code=201,
             summary="Replace a key (new first, then the old one is deleted); the new secret, once")
def rotate_key(request: Request, customer_id: str, key_id: str, p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    key = _own_key(request, cust, key_id)

    def produce():
        issued, old = KeyService(runtime(request), actor=p.actor).rotate(key.id)
        return 201, {**issued.to_json(), "replaced": old.to_json()}

    return idempotency.run(request, p, {"rotate": key.id}, produce)


@router.delete("/customers/{customer_id}/keys/{key_id}", summary="Revoke a key (deleted at Deepgram)")
def revoke_key(request: Request, customer_id: str, key_id: str, p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    key = _own_key(request, cust, key_id)
    revoked, already = KeyService(runtime(request), actor=p.actor).revoke(key.id)
    return respond({**revoked.to_json(), "already_revoked": already})
