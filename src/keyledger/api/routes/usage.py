"""``/customers/{id}/usage``: the same report as ``keyledger usage --json`` (daily rollups); ``/price-check``
(admin): the same report as ``keyledger price-check --json``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from keyledger.api.auth import admin, principal, runtime, scoped_customer
from keyledger.api.jsonout import respond
from keyledger.api.schemas import PERIOD
from keyledger.customers.tokens import Principal
from keyledger.usage import model, price_check_service, service

router = APIRouter(tags=["usage"])


@router.get("/customers/{customer_id}/usage", summary="A customer's usage (amounts as exact decimal strings)")
def usage(
    request: Request,
    customer_id: str,
    from_: str | None = Query(None, alias="from", min_length=1, max_length=10,
                              description="First day, YYYY-MM-DD (UTC)."),
    to: str | None = Query(None, min_length=1, max_length=10,
                           description="Last day, inclusive; default today."),
    by: str = Query("line-item", description="line-item, day or key"),
    p: Principal = Depends(principal),
):
    cust = scoped_customer(request, p, customer_id)
    rt = runtime(request)
    today = service.utc_today(rt.clock)
    start = model.parse_date(from_, "from") if from_ else model.month_of(today)[0]
    end = model.parse_date(to, "to") if to else today
    return respond(service.usage_report(rt.engine, customer=cust.id, start=start, end=end, by=by))


@router.get("/price-check", tags=["reconciliation"],
            summary="A month's ledger records priced with keyledger's copy of Deepgram's list; disagreements")
def price_check(
    request: Request,
    period: str = Query(..., pattern=PERIOD, description="The month, YYYY-MM (UTC days)."),
    customer: str | None = Query(None, max_length=100, description="Only this customer (id or external id)."),
    connection: str | None = Query(None, max_length=100, description="Only this connection."),
    p: Principal = Depends(admin),
):
    rt = runtime(request)
    config = price_check_service.config_from(rt.settings)
    return respond(price_check_service.price_check_report(
        rt.engine, config, period=period, customer=customer, connection=connection
    ))
