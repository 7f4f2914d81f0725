"""The web UI: the operator dashboard at ``/`` and the customer portal at ``/portal`` (server-rendered
Jinja2 over the same services as the CLI and the API; static files, including the vendored Chart.js, are
served from ``/static``). ``install(app)`` mounts it on an app whose ``state.runtime`` is a Runtime."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyledger.web.common import HERE, error_page


def install(app: FastAPI) -> FastAPI:
    from keyledger.web import operator, portal

    app.include_router(portal.router)
    app.include_router(operator.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # A browser asking for a page that does not exist gets a page; the API keeps its problem+json.
    previous = app.exception_handlers.get(StarletteHTTPException)

    async def not_found(request: Request, exc: StarletteHTTPException):
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code in (404, 405) and wants_html and not request.url.path.startswith("/api/"):
            return error_page(request, 404, "There is no page at this address.")
        if previous is None:
            raise exc
        return await previous(request, exc)

    app.add_exception_handler(StarletteHTTPException, not_found)
    return app


__all__ = ["install"]
