"""``/customers/{id}/byo-connection``: connect (PUT) or disconnect (DELETE) the customer's own Deepgram
project. Admin, or that customer's portal token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from keyledger.api.auth import principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.schemas import ByoConnect, ByoDisconnect
from keyledger.customers.byo import ByoService
from keyledger.customers.tokens import Principal

router = APIRouter(tags=["bring your own Deepgram account"])


@router.get("/customers/{customer_id}/byo-connection", summary="Is the customer's own project connected?")
def byo_status(request: Request, customer_id: str, p: Principal = Depends(principal)):
    cust = scoped_customer(request, p, customer_id)
    return respond(ByoService(runtime(request), actor=p.actor).status(cust.id))


@router.put(
    "/customers/{customer_id}/byo-connection",
    summary="Connect the customer's own Deepgram project (the key given is used once and discarded)",
)
def byo_connect(request: Request, customer_id: str, body: ByoConnect, p: Principal = Depends(principal)):
    cust = scoped_customer(request, p, customer_id)
    result = ByoService(runtime(request), actor=p.actor).connect(
        cust.id, project_id=body.project_id, api_key=body.api_key
    )
    return respond(result)


@router.delete("/customers/{customer_id}/byo-connection", summary="Disconnect; deletes the minted key")
def byo_disconnect(
    request: Request, customer_id: str, body: ByoDisconnect | None = None, p: Principal = Depends(principal)
):
    cust = scoped_customer(request, p, customer_id)
    result = ByoService(runtime(request), actor=p.actor).disconnect(
        cust.id, api_key=body.api_key if body else None
    )
    return respond(result)
