"""The FastAPI application factory. ``create_app(runtime)`` wires the routers onto a Runtime (engine,
cipher, clock, providers) built by ``keyledger.bootstrap``, plus ``GET /metrics`` (``api.metrics``) and the
request-id middleware: every response carries ``X-Request-ID`` (the caller's, when it is a sane token,
else a new one), bound into the log context of everything the request logs."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request

from keyledger.api import metrics, problems
from keyledger.api.routes import admin, budgets_webhooks, byo, customers, invoices, keys, tokens, usage

API_PREFIX = "/api/v1"
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": problems.TITLES[code],
        "content": {problems.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for code in (401, 403, 404, 409, 422)
}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["title", "status", "detail"],
}


REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def nul_refusal(request: Request) -> Any:
    """A NUL character in the path or the query never names anything (and PostgreSQL cannot compare text
    with one): 404 for a path, 422 for a query, before any route runs."""
    if "\x00" in request.scope.get("path", ""):
        return problems.problem(404, "no such resource: the path contains a NUL character")
    if b"%00" in request.scope.get("query_string", b"") or b"\x00" in request.scope.get("query_string", b""):
        return problems.problem(422, "the query string contains a NUL character")
    return None


def create_app(runtime: Any) -> FastAPI:
    app = FastAPI(
        title="keyledger",
        version="1",
        description="Customer-managed billing for apps built on the Deepgram API. Bearer auth: an admin "
        "token, or a portal token scoped to one customer. Errors are application/problem+json (RFC 9457).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    problems.install(app)
    http_metrics = metrics.install(app, runtime)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        request_id = request_id_for(request)
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = nul_refusal(request) or await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        http_metrics.observe(request, response.status_code, time.perf_counter() - started)
        return response

    api = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES)

    @api.get("/health", tags=["meta"], summary="Liveness (no auth)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    for module in (customers, keys, usage, tokens, byo, budgets_webhooks, invoices, admin):
        api.include_router(module.router)
    app.include_router(api)

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
