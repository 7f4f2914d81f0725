"""The customer portal at ``/portal``: a portal token (a link ``/portal/login?token=…`` or the sign-in form)
opens a session scoped to one customer. Every lookup goes through that customer: another customer's invoice
is "not found", exactly like one that does not exist. Keys are shown as metadata only, never secrets."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from keyledger.customers.byo import ByoService
from keyledger.customers.service import CustomerService, KeyService
from keyledger.usage import service as usage
from keyledger.web import session
from keyledger.web.common import WebRoute, chart_json, render
from keyledger.web.operator import (
    budget_view,
    credit_note_pdf_response,
    invoices_svc,
    month_range,
    pdf_response,
)
from keyledger.web.session import Session, portal_session, read_form, runtime

router = APIRouter(prefix="/portal", route_class=WebRoute, include_in_schema=False)


def _login_page(request: Request, status: int = 200, error: str | None = None):
    csrf, new_cookie = session.login_csrf(request)
    resp = render(request, "portal/login.html", http_status=status, csrf=csrf, error=error, portal=True)
    if new_cookie:
        session.set_cookie(request, resp, session.PRE_COOKIE, new_cookie, 3600)
    return resp


def _signed_in(request: Request, token: str):
    p = session.authenticate(request, token)
    if p is None or p.is_admin:
        return None
    resp = RedirectResponse("/portal", status_code=303)
    session.start(request, resp, token.strip(), "portal")
    return resp


@router.get("/login")
def login_form(request: Request, token: str | None = None):
    if token:  # a sign-in link; the redirect drops the token from the address bar
        resp = _signed_in(request, token)
        if resp is not None:
            return resp
        return _login_page(request, 401, "This sign-in link is unknown, revoked or expired.")
    return _login_page(request)


@router.post("/login")
def login(request: Request, form: dict = Depends(read_form)):
    session.check_login_csrf(request, form)
    resp = _signed_in(request, form.get("token", ""))
    return resp or _login_page(request, 401, "That portal token is unknown, revoked or expired.")


@router.post("/logout")
def logout(request: Request, form: dict = Depends(read_form), s: Session = Depends(portal_session)):
    session.check_csrf(s, form)
    resp = RedirectResponse("/portal/login", status_code=303)
    session.end(resp)
    return resp


def _customer(request: Request, s: Session):
    return CustomerService(runtime(request), actor=s.actor).get(s.principal.customer_id)


@router.get("")
def home(request: Request, done: str | None = None, s: Session = Depends(portal_session)):
    rt = runtime(request)
    cust = _customer(request, s)
    start, end, period = month_range(request)
    rep = usage.usage_report(rt.engine, customer=cust.id, start=start, end=end, by="day")
    keys = KeyService(rt, actor=s.actor).list(customer=cust.id)
    invs = invoices_svc(request, s.actor).list(customer=cust.id)
    byo = ByoService(rt, actor=s.actor).status(cust.id).to_json()
    return render(request, "portal/home.html", s=s, c=cust, usage=rep, chart=chart_json(rep["lines"]),
                  keys=keys, invoices=invs, budget=budget_view(request, cust, s.actor), period=period,
                  byo=byo, done=done, portal=True)


def _own_invoice(request: Request, s: Session, ref: str) -> dict:
    return invoices_svc(request, s.actor).get(ref, of_customer=s.principal.customer_id)


@router.get("/invoices/{ref}")
def invoice(request: Request, ref: str, s: Session = Depends(portal_session)):
    doc = _own_invoice(request, s, ref)
    return render(request, "invoice.html", s=s, doc=doc, base="/portal", portal=True)


@router.get("/invoices/{ref}/pdf")
def invoice_pdf(request: Request, ref: str, s: Session = Depends(portal_session)):
    return pdf_response(request, _own_invoice(request, s, ref))


@router.get("/credit-notes/{credit_note_id}/pdf")
def credit_note_pdf(request: Request, credit_note_id: str, s: Session = Depends(portal_session)):
    note = invoices_svc(request, s.actor).credit_note(credit_note_id, of_customer=s.principal.customer_id)
    return credit_note_pdf_response(request, note)


@router.post("/byo")
def byo_connect(request: Request, form: dict = Depends(read_form), s: Session = Depends(portal_session)):
    session.check_csrf(s, form)
    ByoService(runtime(request), actor=s.actor).connect(
        s.principal.customer_id, project_id=form.get("project_id", "").strip(),
        api_key=form.get("api_key", "").strip(),
    )
    return RedirectResponse("/portal?done=connected", status_code=303)
