"""Shared pieces of the web UI: templates, the route class for friendly error pages, chart data."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from keyledger.core.errors import KeyledgerError
from keyledger.core.money import round_money
from keyledger.web import session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def money(value: Any, currency: str = "USD") -> str:
    if value is None or value == "":
        return "—"
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    return f"{round_money(amount, currency):,} {currency}"


def quantity(value: Any) -> str:
    """An exact quantity without trailing zeros or an exponent (60.0000000000 -> 60)."""
    q = value if isinstance(value, Decimal) else Decimal(str(value))
    text = format(q, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


templates.env.filters["money"] = money
templates.env.filters["qty"] = quantity
templates.env.filters["when"] = lambda v: "—" if v is None else str(v)[:19].replace("T", " ")


def render(request: Request, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=http_status,
                                      headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    portal = request.url.path.startswith("/portal")
    return render(request, "error.html", http_status=status, status_code=status, message=message,
                  portal=portal)


class WebRoute(APIRoute):
    """Domain errors become HTML pages; a missing session redirects to the sign-in page."""

    def get_route_handler(self) -> Callable:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except session.LoginRequired as exc:
                return RedirectResponse("/portal/login" if exc.portal else "/login", status_code=303)
            except session.CsrfFailed:
                return error_page(request, 403, "This form has expired or did not come from this site. "
                                  "Go back, reload the page and try again.")
            except KeyledgerError as exc:
                return error_page(request, exc.http_status, str(exc))

        return handler


def daily_totals(lines: list[dict]) -> list[dict]:
    """Daily rows of several customers merged per (day, line item), sorted: the overview's table."""
    merged: dict[tuple[str, str], dict] = {}
    for ln in lines:
        k = (ln["day"], ln["line_item"])
        if k not in merged:
            merged[k] = dict(ln)
        else:
            m = merged[k]
            m["quantity"] += ln["quantity"]
            m["cost_usd"] += ln["cost_usd"]
            m["requests"] += ln["requests"]
    return [merged[k] for k in sorted(merged)]


def chart_data(lines: list[dict]) -> dict[str, Any]:
    """Daily usage rows (``usage_report(by="day")`` lines) as a stacked chart: days × line items."""
    days = sorted({ln["day"] for ln in lines})
    items = sorted({ln["line_item"] for ln in lines})
    cost: dict[tuple[str, str], Decimal] = {}
    for ln in lines:
        k = (ln["day"], ln["line_item"])
        cost[k] = cost.get(k, Decimal(0)) + ln["cost_usd"]
    return {
        "labels": days,
        "datasets": [
            {"label": it, "data": [str(cost.get((d, it), Decimal(0))) for d in days]} for it in items
        ],
    }


def chart_json(lines: list[dict]) -> str:
    # Embedded in <script type="application/json">: escape "<" so no text can close the element.
    return json.dumps(chart_data(lines)).replace("<", "\\u003c")
