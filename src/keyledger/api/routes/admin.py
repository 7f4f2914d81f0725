"""Operator resources (admin tokens only): plans, connections, sync runs, reconciliation, portal tokens,
the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from keyledger.api import idempotency
from keyledger.api.auth import admin, runtime
from keyledger.api.jsonout import respond
from keyledger.api.pagination import Page, paginate
from keyledger.api.schemas import PERIOD, ConnectionCreate, PortalTokenCreate, SyncRunCreate
from keyledger.core.errors import NotFound
from keyledger.customers import store as customer_store
from keyledger.customers.model import DEFAULT_API_KEY_ENV
from keyledger.customers.service import ConnectionService
from keyledger.customers.tokens import Principal, TokenService
from keyledger.pricing import service as pricing
from keyledger.usage import model as usage_model
from keyledger.usage import service as usage
from keyledger.usage.price_check_service import config_from

router = APIRouter()


# ---------------------------------------------------------------------------- plans


@router.get("/plans", tags=["plans"], summary="Plans with the version in effect today")
def list_plans(request: Request, page: Page = Depends(), p: Principal = Depends(admin)):
    rt = runtime(request)
    items = [
        {
            "id": s.plan_id, "name": (s.current or s.latest).plan.name,
            "mode": (s.current or s.latest).plan.mode.value, "currency": s.latest.plan.currency,
            "current_version": s.current.version if s.current else None,
            "current_effective_from": s.current.effective_from if s.current else None,
            "latest_version": s.latest.version, "versions": s.versions,
        }
        for s in pricing.list_plans(rt.engine, today=rt.clock.now().date())
    ]
    return respond(paginate(items, page, key=lambda i: i["id"]))


@router.get("/plans/{plan_id}", tags=["plans"], summary="A plan's versions and terms")
def get_plan(request: Request, plan_id: str, p: Principal = Depends(admin)):
    rt = runtime(request)
    versions = pricing.plan_versions(rt.engine, plan_id)
    if not versions:
        raise NotFound(f"plan {plan_id!r} not found")
    try:
        current = pricing.plan_for(rt.engine, plan_id, rt.clock.now().date())
    except NotFound:
        current = None
    return respond({
        "id": plan_id, "current_version": current.version if current else None,
        "versions": [v.to_dict() for v in versions],
    })


# ---------------------------------------------------------------------------- connections


@router.get("/connections", tags=["connections"], summary="Deepgram projects keyledger works with")
def list_connections(request: Request, page: Page = Depends(), p: Principal = Depends(admin)):
    items = [c.to_json() for c in ConnectionService(runtime(request)).list()]
    return respond(paginate(items, page, key=lambda i: i["id"]))


@router.post("/connections", tags=["connections"], status_code=201,
             summary="Register a managed Deepgram project (its key is verified, then stored encrypted)")
def create_connection(request: Request, body: ConnectionCreate, p: Principal = Depends(admin)):
    def produce():
        svc = ConnectionService(runtime(request), actor=p.actor, environ={DEFAULT_API_KEY_ENV: body.api_key})
        conn = svc.add(body.name, project_id=body.project_id, base_url=body.base_url, store_key=True)
        return 201, conn.to_json()

    return idempotency.run(request, p, body.model_dump(), produce)


@router.get("/connections/{connection_id}", tags=["connections"], summary="A connection (id or name)")
def get_connection(request: Request, connection_id: str, p: Principal = Depends(admin)):
    return respond(ConnectionService(runtime(request)).get(connection_id).to_json())


# ---------------------------------------------------------------------------- sync runs


def _open_provider(rt):
    return lambda connection: rt.provider_for(connection.id)


@router.post("/sync-runs", tags=["sync"], status_code=201,
             summary="Run a sync now (every active connection, or one) and answer its runs")
def trigger_sync(request: Request, body: SyncRunCreate | None = None, p: Principal = Depends(admin)):
    body = body or SyncRunCreate()
    rt = runtime(request)
    since = usage_model.parse_instant_option(body.since, "since") if body.since else None
    until = usage_model.parse_instant_option(body.until, "until", end_of_day=True) if body.until else None

    def produce():
        svc = usage.SyncService(engine=rt.engine, settings=rt.settings, clock=rt.clock,
                                open_provider=_open_provider(rt), lease_wait_seconds=0)
        reports = svc.sync(connection=body.connection, since=since, until=until)
        return 201, {"runs": [r.as_json() for r in reports]}

    return idempotency.run(request, p, body.model_dump(), produce)


@router.get("/sync-runs", tags=["sync"], summary="Sync runs, newest first")
def list_sync_runs(request: Request, connection: str | None = Query(None, max_length=200),
                   page: Page = Depends(), p: Principal = Depends(admin)):
    runs = usage.list_sync_runs(runtime(request).engine, connection=connection)
    return respond(paginate(runs, page, key=lambda r: r["id"]))


@router.get("/sync-runs/{run_id}", tags=["sync"], summary="One sync run and its status")
def get_sync_run(request: Request, run_id: str, p: Principal = Depends(admin)):
    return respond(usage.get_sync_run(runtime(request).engine, run_id))


# ---------------------------------------------------------------------------- reconciliation


@router.get("/reconciliation", tags=["reconciliation"],
            summary="Attributed usage vs Deepgram's billing breakdown for a month")
def reconciliation(
    request: Request,
    period: str = Query(..., pattern=PERIOD, description="YYYY-MM"),
    connection: str | None = Query(None, max_length=200),
    p: Principal = Depends(admin),
):
    rt = runtime(request)
    return respond(usage.reconcile(rt.engine, open_provider=_open_provider(rt), period=period,
                                   connection=connection, price_check=config_from(rt.settings)))


# ---------------------------------------------------------------------------- portal tokens


@router.post("/portal-tokens", tags=["portal tokens"], status_code=201,
             summary="A token scoped to one customer, for the customer portal (shown once)")
def create_portal_token(request: Request, body: PortalTokenCreate, p: Principal = Depends(admin)):
    def produce():
        out = TokenService(runtime(request), actor=p.actor).create_portal(
            body.customer_id, ttl_seconds=body.ttl_seconds
        )
        return 201, out

    return idempotency.run(request, p, body.model_dump(), produce)


@router.delete("/portal-tokens/{token_id}", tags=["portal tokens"], status_code=204,
               summary="Revoke a portal token")
def revoke_portal_token(request: Request, token_id: str, p: Principal = Depends(admin)):
    TokenService(runtime(request), actor=p.actor).revoke_portal(token_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- audit log


@router.get("/audit-log", tags=["audit"], summary="Every state-changing action: actor, action, subject, time")
def audit_log(request: Request, subject: str | None = Query(None, max_length=200),
              page: Page = Depends(), p: Principal = Depends(admin)):
    with runtime(request).engine.connect() as db:
        entries = customer_store.list_audit(db, subject=subject, limit=100_000)
    return respond(paginate(entries, page, key=lambda e: e["id"]))
