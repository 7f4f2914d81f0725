"""The operator dashboard at ``/``: sign-in with an admin token, overview, customers, customer detail (keys,
usage, budget, invoices), invoices, reconciliation, sync runs, webhooks. Routes only read and call
services; every form carries the session's CSRF token."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from keyledger.budgets import model as budget_model
from keyledger.budgets.service import BudgetService
from keyledger.core.errors import NotFound
from keyledger.customers.model import Customer
from keyledger.customers.service import CustomerService, KeyService
from keyledger.invoices.render import Issuer, render_credit_note
from keyledger.invoices.render import render as render_document
from keyledger.invoices.service import InvoiceService
from keyledger.notifications.service import WebhookService
from keyledger.usage import model as usage_model
from keyledger.usage import service as usage
from keyledger.web import session
from keyledger.web.common import WebRoute, chart_json, daily_totals, render
from keyledger.web.session import Session, admin_session, read_form, runtime

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def invoices_svc(request: Request, actor: str) -> InvoiceService:
    rt = runtime(request)
    return InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor=actor)


def month_range(request: Request) -> tuple[date, date, str]:
    today = usage.utc_today(runtime(request).clock)
    first, _last = usage_model.month_of(today)
    return first, today, today.strftime("%Y-%m")


def budget_view(request: Request, cust: Customer, actor: str) -> dict[str, Any] | None:
    rt = runtime(request)
    try:
        b = BudgetService(rt, actor=actor).show(cust.id)
    except NotFound:
        return None
    now = rt.clock.now()
    proj = budget_model.projection(b["spent"], budget_model.period_at(now, cust.timezone), now)
    return {**b, "projection": proj, "gauge": min(b["percent"], Decimal(100))}


def pdf_response(request: Request, doc: dict) -> Response:
    """An invoice document as a PDF download."""
    data = render_document(doc, "pdf", Issuer.from_settings(runtime(request).settings))
    return _pdf_download(data, doc["number"] or doc["id"])


def credit_note_pdf_response(request: Request, note: dict) -> Response:
    """A credit note document as a PDF download."""
    return _pdf_download(render_credit_note(note, "pdf", Issuer.from_settings(runtime(request).settings)),
                         note["number"])


def _pdf_download(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}.pdf"',
                             "Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------------- sign-in


@router.get("/login")
def login_form(request: Request, error: str | None = None):
    csrf, new_cookie = session.login_csrf(request)
    resp = render(request, "login.html", csrf=csrf, error=error, portal=False)
    if new_cookie:
        session.set_cookie(request, resp, session.PRE_COOKIE, new_cookie, 3600)
    return resp


@router.post("/login")
def login(request: Request, form: dict = Depends(read_form)):
    session.check_login_csrf(request, form)
    p = session.authenticate(request, form.get("token", ""))
    if p is None or not p.is_admin:
        csrf, _ = session.login_csrf(request)
        return render(request, "login.html", http_status=401, csrf=csrf, portal=False,
                      error="That token is unknown, revoked or expired, or is not an admin token.")
    resp = RedirectResponse("/", status_code=303)
    session.start(request, resp, form["token"].strip(), "admin")
    return resp


@router.post("/logout")
def logout(request: Request, form: dict = Depends(read_form), s: Session = Depends(admin_session)):
    session.check_csrf(s, form)
    resp = RedirectResponse("/login", status_code=303)
    session.end(resp)
    return resp


# ---------------------------------------------------------------------------------------------- overview


def spend_by_customer(request: Request, actor: str) -> tuple[list[dict], list[dict]]:
    rt = runtime(request)
    start, end, _ = month_range(request)
    rows, lines = [], []
    for c in CustomerService(rt, actor=actor).list():
        rep = usage.usage_report(rt.engine, customer=c.id, start=start, end=end, by="day")
        lines += rep["lines"]
        rows.append({"customer": c, "spend": rep["cost_usd"], "requests": rep["requests"]})
    return rows, lines


@router.get("/")
def overview(request: Request, s: Session = Depends(admin_session)):
    rt = runtime(request)
    rows, lines = spend_by_customer(request, s.actor)
    _, _, period = month_range(request)
    margin = invoices_svc(request, s.actor).margin(period)
    budgets = BudgetService(rt, actor=s.actor).list()
    alerts = [b for b in budgets if b["state"] != "ok" or b["fired"]]
    runs = usage.list_sync_runs(rt.engine)
    top = sorted((r for r in rows if r["spend"]), key=lambda r: r["spend"], reverse=True)[:5]
    return render(
        request, "overview.html", s=s, period=period, spend=sum((r["spend"] for r in rows), Decimal(0)),
        totals=margin["totals"], chart=chart_json(lines), lines=daily_totals(lines), top=top, alerts=alerts,
        last_run=runs[0] if runs else None, nav="overview",
    )


# ---------------------------------------------------------------------------------------------- customers


@router.get("/customers")
def customers(request: Request, q: str = "", status: str = "", s: Session = Depends(admin_session)):
    rows, _ = spend_by_customer(request, s.actor)
    budgets = {b["customer_id"]: b for b in BudgetService(runtime(request), actor=s.actor).list()}
    needle = q.strip().lower()
    shown = [
        {**r, "budget": budgets.get(r["customer"].id)}
        for r in rows
        if (not status or r["customer"].status == status)
        and (not needle or needle in f"{r['customer'].name} {r['customer'].external_id} "
             f"{r['customer'].email or ''} {r['customer'].id}".lower())
    ]
    return render(request, "customers.html", s=s, rows=shown, q=q, status=status, nav="customers")


@router.get("/customers/{ref}")
def customer_detail(request: Request, ref: str, s: Session = Depends(admin_session)):
    rt = runtime(request)
    cust = CustomerService(rt, actor=s.actor).get(ref)
    start, end, period = month_range(request)
    rep = usage.usage_report(rt.engine, customer=cust.id, start=start, end=end, by="day")
    keys = KeyService(rt, actor=s.actor).list(customer=cust.id)
    invs = invoices_svc(request, s.actor).list(customer=cust.id)
    return render(request, "customer.html", s=s, c=cust, usage=rep, chart=chart_json(rep["lines"]),
                  keys=keys, invoices=invs, budget=budget_view(request, cust, s.actor), period=period,
                  nav="customers")


def _own_key(request: Request, cust: Customer, key_ref: str, actor: str):
    key = KeyService(runtime(request), actor=actor).get(key_ref)
    if key.customer_id != cust.id:
        raise NotFound(f"key {key_ref!r} not found for customer {cust.external_id}")
    return key


@router.get("/customers/{ref}/keys/{key_ref}/revoke")
def confirm_revoke(request: Request, ref: str, key_ref: str, s: Session = Depends(admin_session)):
    cust = CustomerService(runtime(request), actor=s.actor).get(ref)
    key = _own_key(request, cust, key_ref, s.actor)
    return render(request, "confirm_revoke.html", s=s, c=cust, key=key, nav="customers")


@router.post("/customers/{ref}/keys/{key_ref}/revoke")
def revoke_key(request: Request, ref: str, key_ref: str, form: dict = Depends(read_form),
               s: Session = Depends(admin_session)):
    session.check_csrf(s, form)
    rt = runtime(request)
    cust = CustomerService(rt, actor=s.actor).get(ref)
    key = _own_key(request, cust, key_ref, s.actor)
    KeyService(rt, actor=s.actor).revoke(key.id)
    return RedirectResponse(f"/customers/{cust.id}?done=revoked", status_code=303)


@router.post("/customers/{ref}/keys/{key_ref}/rotate")
def rotate_key(request: Request, ref: str, key_ref: str, form: dict = Depends(read_form),
               s: Session = Depends(admin_session)):
    session.check_csrf(s, form)
    rt = runtime(request)
    cust = CustomerService(rt, actor=s.actor).get(ref)
    key = _own_key(request, cust, key_ref, s.actor)
    issued, old = KeyService(rt, actor=s.actor).rotate(key.id)
    # The creation screen: the only page that ever shows this secret.
    return render(request, "key_created.html", s=s, c=cust, issued=issued, old=old, nav="customers")


# ---------------------------------------------------------------------------------------------- invoices


#: The invoice actions behind a confirmation page (GET shows it, POST with the CSRF token does it).
INVOICE_ACTIONS = ("finalize", "void", "mark-paid", "credit")


@router.get("/invoices")
def invoices(request: Request, period: str = "", status: str = "", s: Session = Depends(admin_session)):
    items = invoices_svc(request, s.actor).list(period=period or None, status=status or None)
    return render(request, "invoices.html", s=s, items=items, period=period, status=status, nav="invoices")


@router.get("/invoices/{ref}")
def invoice(request: Request, ref: str, s: Session = Depends(admin_session)):
    doc = invoices_svc(request, s.actor).get(ref)
    return render(request, "invoice.html", s=s, doc=doc, base="", nav="invoices")


@router.get("/invoices/{ref}/pdf")
def invoice_pdf(request: Request, ref: str, s: Session = Depends(admin_session)):
    return pdf_response(request, invoices_svc(request, s.actor).get(ref))


@router.get("/credit-notes/{credit_note_id}/pdf")
def credit_note_pdf(request: Request, credit_note_id: str, s: Session = Depends(admin_session)):
    return credit_note_pdf_response(request, invoices_svc(request, s.actor).credit_note(credit_note_id))


@router.get("/invoices/{ref}/{action}")
def confirm(request: Request, ref: str, action: str, s: Session = Depends(admin_session)):
    if action not in INVOICE_ACTIONS:
        raise NotFound(f"no such page: /invoices/{ref}/{action}")
    doc = invoices_svc(request, s.actor).get(ref)
    return render(request, "confirm.html", s=s, doc=doc, action=action, nav="invoices")


@router.post("/invoices/{ref}/{action}")
def invoice_action(request: Request, ref: str, action: str, form: dict = Depends(read_form),
                   s: Session = Depends(admin_session)):
    session.check_csrf(s, form)
    svc = invoices_svc(request, s.actor)
    doc = svc.get(ref)
    if action == "finalize":
        svc.finalize(doc["id"])
    elif action == "void":
        svc.void(doc["id"], reason=form.get("reason") or None)
    elif action == "mark-paid":
        svc.mark_paid(doc["id"])
    elif action == "credit":
        picked = (k.removeprefix("line_") for k in form if k.startswith("line_"))  # checkboxes line_1, …
        lines = sorted(int(n) for n in picked if n.isascii() and n.isdigit())
        svc.credit(doc["id"], reason=form.get("reason", ""), amount=form.get("amount") or None,
                   lines=lines or None)
    else:
        raise NotFound(f"no such action: {action}")
    return RedirectResponse(f"/invoices/{doc['id']}", status_code=303)


# ---------------------------------------------------------------------------------------------- operations


@router.get("/reconciliation")
def reconciliation(request: Request, period: str = "", s: Session = Depends(admin_session)):
    rt = runtime(request)
    period = period or month_range(request)[2]
    rec = usage.reconcile(rt.engine, open_provider=lambda c: rt.provider_for(c.id), period=period,
                          connection=None)
    return render(request, "reconciliation.html", s=s, rec=rec, period=period, nav="reconciliation")


@router.get("/sync-runs")
def sync_runs(request: Request, s: Session = Depends(admin_session)):
    runs = usage.list_sync_runs(runtime(request).engine)[:100]
    return render(request, "sync_runs.html", s=s, runs=runs, nav="sync")


def webhooks_svc(request: Request, actor: str) -> WebhookService:
    rt = runtime(request)
    return WebhookService(rt.engine, rt.cipher, rt.clock, actor=actor,
                          allow_private=bool(rt.settings.webhook_allow_private_networks))


@router.get("/webhooks")
def webhooks(request: Request, s: Session = Depends(admin_session)):
    svc = webhooks_svc(request, s.actor)
    return render(request, "webhooks.html", s=s, endpoints=svc.list(), events=svc.events(limit=50),
                  attempts=svc.attempts()[:50], nav="webhooks")


@router.post("/webhooks/events/{event_id}/replay")
def replay(request: Request, event_id: str, form: dict = Depends(read_form),
           s: Session = Depends(admin_session)):
    session.check_csrf(s, form)
    webhooks_svc(request, s.actor).replay(event_id)
    return RedirectResponse("/webhooks?done=replayed", status_code=303)
