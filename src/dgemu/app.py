"""The Starlette application: routing, fault injection, error shaping (nothing answers 500 for bad input)."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from . import dataplane, errors, extras, live, manage
from .common import Emulator
from .jsonout import DgJSON
from .store import Persister

Handler = Callable[[Emulator, Request], Awaitable[Any]]


def error_response(err: errors.DgError) -> Response:
    headers = dict(err.headers)
    if err.request_id:
        headers.setdefault("dg-request-id", err.request_id)
    if isinstance(err.body, dict) and "err_msg" in err.body:
        headers.setdefault("dg-error", str(err.body["err_msg"])[:200].encode("ascii", "replace").decode())
    if isinstance(err.body, str):
        return PlainTextResponse(err.body, status_code=err.status, headers=headers)
    return DgJSON(err.body, status_code=err.status, headers=headers)


def internal_error(exc: BaseException) -> Response:
    traceback.print_exception(exc)
    return error_response(errors.legacy(500, "INTERNAL_SERVER_ERROR", "An internal error occurred."))


async def apply_faults(emu: Emulator) -> None:
    f = emu.store.faults
    if f.latency_ms > 0:
        await asyncio.sleep(f.latency_ms / 1000)
    if f.rate_limit_rate > 0 and emu.fault_rng.random() < f.rate_limit_rate:
        retry = f.retry_after_seconds
        retry_text = str(int(retry)) if retry == int(retry) else f"{retry:g}"
        raise errors.legacy(
            429,
            "TOO_MANY_REQUESTS",
            "Too many requests. Please try again later.",
            headers={"Retry-After": retry_text},
        )
    if f.error_rate > 0 and emu.fault_rng.random() < f.error_rate:
        raise errors.legacy(
            503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable (injected fault)."
        )


def wrap(emu: Emulator, handler: Handler, *, faults: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if faults:
                await apply_faults(emu)
            result = await handler(emu, request)
            if isinstance(result, Response):
                return result
            return DgJSON(result)
        except errors.DgError as err:
            return error_response(err)
        except Exception as exc:  # a genuine bug: still a Deepgram-shaped body
            return internal_error(exc)

    endpoint.__name__ = handler.__name__
    return endpoint


def build_app(emu: Emulator, persister: Persister | None = None) -> Starlette:
    def r(path: str, handler: Handler, methods: list[str], *, faults: bool = True) -> Route:
        return Route(path, wrap(emu, handler, faults=faults), methods=methods)

    P = "/v1/projects/{project_id}"
    routes = [
        r("/_emulator/health", extras.health, ["GET"], faults=False),
        r("/_emulator/reset", extras.reset, ["POST"], faults=False),
        r("/_emulator/projects", extras.create_project, ["POST"], faults=False),
        r("/_emulator/projects/{project_id}/requests", extras.inject_requests, ["POST"], faults=False),
        r("/_emulator/faults", extras.get_faults, ["GET"], faults=False),
        r("/_emulator/faults", extras.set_faults, ["POST"], faults=False),
        r("/_emulator/clock", extras.clock, ["GET"], faults=False),
        r("/v1/projects", manage.list_projects, ["GET"]),
        r(P, manage.get_project, ["GET"]),
        r(P, manage.update_project, ["PATCH"]),
        r(P, manage.delete_project, ["DELETE"]),
        r(P + "/keys", manage.list_keys, ["GET"]),
        r(P + "/keys", manage.create_key, ["POST"]),
        r(P + "/keys/{key_id}", manage.get_key, ["GET"]),
        r(P + "/keys/{key_id}", manage.delete_key, ["DELETE"]),
        r(P + "/members", manage.list_members, ["GET"]),
        r(P + "/requests", manage.list_requests, ["GET"]),
        r(P + "/requests/{request_id}", manage.get_request, ["GET"]),
        r(P + "/usage", manage.usage_summary, ["GET"]),
        r(P + "/usage/fields", manage.usage_fields, ["GET"]),
        r(P + "/usage/breakdown", manage.usage_breakdown, ["GET"]),
        r(P + "/billing/breakdown", manage.billing_breakdown, ["GET"]),
        r(P + "/billing/fields", manage.billing_fields, ["GET"]),
        r(P + "/balances", manage.list_balances, ["GET"]),
        r(P + "/balances/{balance_id}", manage.get_balance, ["GET"]),
        r(P + "/purchases", manage.list_purchases, ["GET"]),
        r(P + "/models", manage.list_project_models, ["GET"]),
        r(P + "/models/{model_id}", manage.get_project_model, ["GET"]),
        r("/v1/models", manage.list_models, ["GET"]),
        r("/v1/models/{model_id}", manage.get_model, ["GET"]),
        r("/v1/auth/grant", dataplane.grant, ["POST"]),
        r("/v1/listen", dataplane.listen, ["POST"]),
        r("/v1/speak", dataplane.speak, ["POST"]),
        r("/v1/read", dataplane.read, ["POST"]),
        WebSocketRoute("/v1/listen", live.make_endpoint(emu)),
    ]

    async def http_exception(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            return error_response(errors.legacy(404, "NOT_FOUND", "Not found."))
        if status == 405:
            return error_response(errors.legacy(405, "METHOD_NOT_ALLOWED", "Method not allowed."))
        return error_response(
            errors.legacy(
                status,
                "Bad Request" if status < 500 else "INTERNAL_SERVER_ERROR",
                str(getattr(exc, "detail", "Error")),
            )
        )

    async def any_exception(request: Request, exc: Exception) -> Response:
        return internal_error(exc)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if persister is not None:
            persister.start()
        try:
            yield
        finally:
            if persister is not None:
                await asyncio.to_thread(persister.stop)

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_exception, Exception: any_exception},
        lifespan=lifespan,
    )
    app.state.emulator = emu
    return app
