"""``/customers/{id}/budget`` (portal tokens may read their own), ``/budgets`` and ``/webhook-endpoints``
(admin). The webhook secret appears once, in the creation answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from keyledger.api import idempotency
from keyledger.api.auth import admin, admin_for_customer, principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.pagination import Page, paginate
from keyledger.api.schemas import BudgetSet, WebhookCreate
from keyledger.budgets.service import BudgetService
from keyledger.customers.tokens import Principal
from keyledger.notifications.service import WebhookService

router = APIRouter()


@router.get("/customers/{customer_id}/budget", tags=["budgets"], summary="The customer's budget and spend")
def get_budget(request: Request, customer_id: str, p: Principal = Depends(principal)):
    cust = scoped_customer(request, p, customer_id)
    return respond(BudgetService(runtime(request), actor=p.actor).show(cust.id))


@router.put("/customers/{customer_id}/budget", tags=["budgets"], summary="Set (create or replace) the budget")
def set_budget(request: Request, customer_id: str, body: BudgetSet, p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    thresholds = ",".join(str(t) for t in body.thresholds) if body.thresholds else None
    row = BudgetService(runtime(request), actor=p.actor).set(
        cust.id, limit=body.limit, period=body.period, thresholds=thresholds, action=body.action
    )
    return respond(row)


@router.delete("/customers/{customer_id}/budget", tags=["budgets"], status_code=204,
               summary="Remove the budget")
def delete_budget(request: Request, customer_id: str, p: Principal = Depends(principal)):
    cust = admin_for_customer(request, p, customer_id)
    BudgetService(runtime(request), actor=p.actor).remove(cust.id)
    return Response(status_code=204)


@router.get("/budgets", tags=["budgets"], summary="Every budget with this period's spend")
def list_budgets(request: Request, page: Page = Depends(), p: Principal = Depends(admin)):
    rows = BudgetService(runtime(request), actor=p.actor).list()
    return respond(paginate(rows, page, key=lambda r: r["customer_id"]))


def _webhooks(request: Request, p: Principal) -> WebhookService:
    rt = runtime(request)
    return WebhookService(rt.engine, rt.cipher, rt.clock, actor=p.actor,
                          allow_private=bool(rt.settings.webhook_allow_private_networks))


@router.get("/webhook-endpoints", tags=["webhooks"], summary="Webhook endpoints (never their secrets)")
def list_webhooks(request: Request, page: Page = Depends(), p: Principal = Depends(admin)):
    return respond(paginate(_webhooks(request, p).list(), page, key=lambda r: r["id"]))


@router.post("/webhook-endpoints", tags=["webhooks"], status_code=201,
             summary="Add an endpoint; the answer carries its whsec_ signing secret, once")
def add_webhook(request: Request, body: WebhookCreate, p: Principal = Depends(admin)):
    def produce():
        return 201, _webhooks(request, p).add(body.url, body.events)

    return idempotency.run(request, p, body.model_dump(), produce)


@router.delete("/webhook-endpoints/{endpoint_id}", tags=["webhooks"], status_code=204,
               summary="Remove an endpoint (pending deliveries are cancelled)")
def remove_webhook(request: Request, endpoint_id: str, p: Principal = Depends(admin)):
    _webhooks(request, p).remove(endpoint_id)
    return Response(status_code=204)


@router.post("/webhook-events/{event_id}/replay", tags=["webhooks"], summary="Deliver an event again")
def replay_event(request: Request, event_id: str, p: Principal = Depends(admin)):
    return respond({"event_id": event_id, "endpoints": _webhooks(request, p).replay(event_id)})
