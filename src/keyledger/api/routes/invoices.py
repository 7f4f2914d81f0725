"""``/invoices``: list, show, PDF, finalize, void, mark-paid, credit notes (``/credit-notes``: show, PDF);
``/invoice-runs`` builds drafts.
A portal token sees its own customer's invoices only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from keyledger.api import idempotency
from keyledger.api.auth import admin, principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.pagination import Page, paginate
from keyledger.api.problems import ApiError
from keyledger.api.schemas import PERIOD, CreditNoteCreate, InvoiceRunCreate, VoidBody
from keyledger.customers.tokens import Principal
from keyledger.invoices.render import Issuer, render, render_credit_note
from keyledger.invoices.service import InvoiceService

router = APIRouter(tags=["invoices"])


def _svc(request: Request, p: Principal) -> InvoiceService:
    rt = runtime(request)
    return InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor=p.actor)


def _own(p: Principal) -> str | None:
    """The customer a caller may see: a portal token's own (``of_customer`` of the service reads)."""
    return None if p.is_admin else p.customer_id


def _visible(request: Request, p: Principal, ref: str) -> dict:
    return _svc(request, p).get(ref, of_customer=_own(p))


def _admin_only(p: Principal) -> None:
    if not p.is_admin:
        raise ApiError(403, "this endpoint needs an admin token; a portal token cannot use it")


@router.get("/invoices", summary="Invoices (newest period first as the ledger lists them)")
def list_invoices(
    request: Request,
    customer_id: str | None = Query(None, max_length=200),
    period: str | None = Query(None, pattern=PERIOD, description="YYYY-MM"),
    status: str | None = Query(None, description="draft, finalized, paid or void"),
    page: Page = Depends(),
    p: Principal = Depends(principal),
):
    if not p.is_admin:
        if customer_id is not None:
            scoped_customer(request, p, customer_id)
        customer_id = p.customer_id
    items = _svc(request, p).list(period=period, customer=customer_id, status=status)
    return respond(paginate(items, page, key=lambda i: i["id"]))


@router.post("/invoice-runs", status_code=201, summary="Build (or rebuild) drafts for a period")
def run_invoices(request: Request, body: InvoiceRunCreate, p: Principal = Depends(admin)):
    def produce():
        report = _svc(request, p).run(body.period, customer=body.customer, finalize=body.finalize)
        return 201, report.to_dict()

    return idempotency.run(request, p, body.model_dump(), produce)


@router.get("/invoices/{invoice_id}", summary="An invoice with its lines (id or number)")
def get_invoice(request: Request, invoice_id: str, p: Principal = Depends(principal)):
    return respond(_visible(request, p, invoice_id))


@router.get(
    "/invoices/{invoice_id}/pdf", summary="The invoice as PDF",
    responses={200: {"content": {"application/pdf": {}}}},
)
def invoice_pdf(request: Request, invoice_id: str, p: Principal = Depends(principal)):
    doc = _visible(request, p, invoice_id)
    return _pdf(render(doc, "pdf", _issuer(request)), doc["number"] or doc["id"])


def _issuer(request: Request) -> Issuer:
    return Issuer.from_settings(runtime(request).settings)


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})


@router.post("/invoices/{invoice_id}/finalize", summary="Finalize a draft (assigns the next number)")
def finalize(request: Request, invoice_id: str, p: Principal = Depends(principal)):
    doc = _visible(request, p, invoice_id)
    _admin_only(p)
    svc = _svc(request, p)
    svc.finalize(doc["id"])
    return respond(svc.get(doc["id"]))


@router.post("/invoices/{invoice_id}/void", summary="Void a finalized invoice (it keeps its number)")
def void(request: Request, invoice_id: str, body: VoidBody | None = None, p: Principal = Depends(principal)):
    doc = _visible(request, p, invoice_id)
    _admin_only(p)
    svc = _svc(request, p)
    svc.void(doc["id"], reason=body.reason if body else None)
    return respond(svc.get(doc["id"]))


@router.post("/invoices/{invoice_id}/mark-paid", summary="Mark a finalized invoice paid")
def mark_paid(request: Request, invoice_id: str, p: Principal = Depends(principal)):
    doc = _visible(request, p, invoice_id)
    _admin_only(p)
    svc = _svc(request, p)
    svc.mark_paid(doc["id"])
    return respond(svc.get(doc["id"]))


@router.post(
    "/invoices/{invoice_id}/credit-notes", status_code=201,
    summary="Issue a credit note against a finalized or paid invoice (default: everything left to credit)",
)
def credit(request: Request, invoice_id: str, body: CreditNoteCreate, p: Principal = Depends(principal)):
    doc = _visible(request, p, invoice_id)
    _admin_only(p)

    def produce():
        note = _svc(request, p).credit(doc["id"], reason=body.reason, amount=body.amount, lines=body.lines)
        return 201, note

    return idempotency.run(request, p, body.model_dump(), produce)


def _visible_note(request: Request, p: Principal, ref: str) -> dict:
    return _svc(request, p).credit_note(ref, of_customer=_own(p))


@router.get("/credit-notes/{credit_note_id}",
            summary="A credit note (id or number), with its invoice's customer, period and tax rate")
def get_credit_note(request: Request, credit_note_id: str, p: Principal = Depends(principal)):
    return respond(_visible_note(request, p, credit_note_id))


@router.get(
    "/credit-notes/{credit_note_id}/pdf", summary="The credit note as PDF",
    responses={200: {"content": {"application/pdf": {}}}},
)
def credit_note_pdf(request: Request, credit_note_id: str, p: Principal = Depends(principal)):
    note = _visible_note(request, p, credit_note_id)
    return _pdf(render_credit_note(note, "pdf", _issuer(request)), note["number"])
