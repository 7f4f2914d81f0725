"""``/customers/{id}/tokens``: a short-lived Deepgram token minted from the customer's own key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from keyledger.api.auth import admin_for_customer, principal, runtime
from keyledger.api.jsonout import respond
from keyledger.api.schemas import GrantCreate
from keyledger.customers.grants import GrantService
from keyledger.customers.tokens import Principal

router = APIRouter(tags=["browser tokens"])


@router.post(
    "/customers/{customer_id}/tokens", status_code=201,
    summary="Mint a Deepgram access token for a browser; its usage is attributed to the customer",
)
def grant(
    request: Request, customer_id: str, body: GrantCreate | None = None, p: Principal = Depends(principal)
):
    cust = admin_for_customer(request, p, customer_id)
    body = body or GrantCreate()
    g = GrantService(runtime(request), actor=p.actor).grant(cust.id, ttl_seconds=body.ttl_seconds)
    return respond({"access_token": g.access_token, "expires_in": g.expires_in}, status_code=201,
                   headers={"Cache-Control": "no-store"})
