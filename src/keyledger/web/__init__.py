"""The web UI: the operator dashboard at ``/`` and the customer portal at ``/portal`` (server-rendered
Jinja2 over the same services as the CLI and the API; static files, including the vendored Chart.js, are
served from ``/static``). ``install(app)`` mounts it on an app whose ``state.runtime`` is a Runtime."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from keyledger.web.common import HERE


def install(app: FastAPI) -> FastAPI:
    from keyledger.web import operator, portal

    app.include_router(portal.router)
    app.include_router(operator.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app


__all__ = ["install"]
