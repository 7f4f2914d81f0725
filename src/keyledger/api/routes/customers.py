"""``/customers``: list, create, show, update, suspend, reinstate, credentials (admin, audited)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from keyledger.api import idempotency
from keyledger.api.auth import admin, admin_for_customer, principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.pagination import Page, paginate
from keyledger.api.problems import ApiError
from keyledger.api.schemas import CustomerCreate, CustomerUpdate, ReinstateBody, SuspendBody
from keyledger.core.errors import Conflict, Invalid
from keyledger.customers.grants import is_grant_key
from keyledger.customers.model import CUSTOMER_STATUSES
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.customers.tokens import Principal

router = APIRouter(tags=["customers"])


@router.get("/customers", summary="List customers (a portal token sees only its own)")
def list_customers(
    request: Request,
    status: str | None = Query(None, description="active or suspended"),
    page: Page = Depends(),
    p: Principal = Depends(principal),
):
    if status is not None and status not in CUSTOMER_STATUSES:
        raise Invalid(f"status {status!r} is not one of {', '.join(CUSTOMER_STATUSES)}")
    items = CustomerService(runtime(request), actor=p.actor).list(status=status)
    if not p.is_admin:
        items = [c for c in items if c.id == p.customer_id]
    return respond(paginate([c.to_json() for c in items], page, key=lambda c: c["id"]))


@router.post("/customers", status_code=201, summary="Create a customer (Idempotency-Key supported)")
def create_customer(request: Request, body: CustomerCreate, p: Principal = Depends(admin)):
    def produce():
        c = CustomerService(runtime(request), actor=p.actor).add(
            body.name, external_id=body.external_id, email=body.email, plan=body.plan,
            currency=body.currency, timezone=body.timezone,
        )
        return 201, c.to_json()

    return idempotency.run(request, p, body.model_dump(), produce)


@router.get("/customers/{customer_id}", summary="A customer (id or external id)")
def get_customer(request: Request, customer_id: str, p: Principal = Depends(principal)):
    return respond(scoped_customer(request, p, customer_id).to_json())


@router.patch("/customers/{customer_id}", summary="Update a customer's fields")
def update_customer(
    request: Request, customer_id: str, body: CustomerUpdate, p: Principal = Depends(principal)
):
    cust = admin_for_customer(request, p, customer_id)
    changes = body.model_dump(exclude_unset=True)
    return respond(CustomerService(runtime(request), actor=p.actor).update(cust.id, **changes).to_json())


@router.post("/customers/{customer_id}/suspend", summary="Suspend (and by default revoke its keys)")
def suspend_customer(
    request: Request, customer_id: str, body: SuspendBody | None = None, p: Principal = Depends(principal)
):
    cust = admin_for_customer(request, p, customer_id)
    body = body or SuspendBody()
    customer, revoked = CustomerService(runtime(request), actor=p.actor).suspend(
        cust.id, revoke_keys=body.revoke_keys
    )
    return respond({**customer.to_json(), "revoked_keys": [k.to_json() for k in revoked]})


@router.post("/customers/{customer_id}/reinstate", summary="Reactivate (and by default issue new keys)")
def reinstate_customer(
    request: Request, customer_id: str, body: ReinstateBody | None = None, p: Principal = Depends(principal)
):
    cust = admin_for_customer(request, p, customer_id)
    body = body or ReinstateBody()
    customer, issued = CustomerService(runtime(request), actor=p.actor).reinstate(
        cust.id, recreate_keys=body.recreate_keys
    )
    # New keys are reported without their secrets: the operator's backend reads them via /credentials.
    new_keys = [{k: v for k, v in i.to_json().items() if k != "secret"} for i in issued]
    return respond({**customer.to_json(), "new_keys": new_keys})


@router.get(
    "/customers/{customer_id}/credentials",
    summary="The customer's current Deepgram key (admin only; every read is audited)",
)
def credentials(request: Request, customer_id: str, p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    if cust.status != "active":
        raise ApiError(403, f"customer {cust.external_id} is suspended: it has no usable Deepgram key")
    keys = KeyService(runtime(request), actor=p.actor)
    usable = [k for k in keys.list(customer=cust.id, status="active") if k.has_secret and not is_grant_key(k)]
    if not usable:
        raise Conflict(
            f"customer {cust.external_id} has no active key with a stored secret; create one "
            f"(POST /api/v1/customers/{cust.id}/keys) or rotate the adopted one"
        )
    key = usable[-1]  # the newest
    row = ConnectionService(runtime(request)).get(key.connection_id)
    secret = keys.secret(key.id)  # audited as key.secret_read by this caller
    return respond(
        {
            "customer_id": cust.id,
            "external_id": cust.external_id,
            "key_id": key.id,
            "api_key_id": key.api_key_id,
            "api_key": secret,
            "base_url": row.base_url,
            "project_id": row.project_id,
            "scopes": list(key.scopes),
            "expires_at": key.expires_at,
        },
        headers={"Cache-Control": "no-store"},
    )
