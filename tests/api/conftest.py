"""API fixtures: a live keyledger API (uvicorn in a thread, on a free port) over a real database
(SQLite and PostgreSQL, via ``db_url``) and a real dgemu over HTTP.

- ``api``: the server, with a managed connection to dgemu's project (key stored encrypted) and an admin
  token; ``api.client(token)`` is an httpx client with that bearer token (admin by default);
  ``api.runtime`` is the server's Runtime (for arranging state through the same services).
- ``api.responses``: every response body the test clients received (to search them for secrets).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from keyledger.api import create_app
from keyledger.bootstrap import Runtime
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService
from keyledger.customers.tokens import TokenService
from tests.conftest import free_port


@dataclass
class Api:
    base_url: str
    admin_token: str
    runtime: Runtime
    dgemu: object
    connection_id: str
    responses: list[bytes] = field(default_factory=list)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        tok = self.admin_token if token is None else token
        hdrs = {"Authorization": f"Bearer {tok}"} if tok else {}
        hdrs.update(headers)

        def keep(resp: httpx.Response) -> None:
            resp.read()
            self.responses.append(resp.content)

        return httpx.Client(base_url=self.base_url + "/api/v1", headers=hdrs, timeout=60,
                            event_hooks={"response": [keep]})

    def customer(self, external_id: str, **kw) -> dict:
        with self.client() as c:
            r = c.post("/customers", json={"name": kw.pop("name", external_id.title()),
                                           "external_id": external_id, **kw})
            assert r.status_code == 201, r.text
            return r.json()

    def portal_token(self, customer_id: str, ttl: int | None = None) -> str:
        body = {"customer_id": customer_id} | ({"ttl_seconds": ttl} if ttl else {})
        with self.client() as c:
            r = c.post("/portal-tokens", json=body)
            assert r.status_code == 201, r.text
            return r.json()["token"]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread
        pass


def start_api(runtime: Runtime) -> tuple[str, _Server, threading.Thread]:
    port = free_port()
    server = _Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning",
                                    access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def make_runtime(db_url: str, dgemu) -> Runtime:
    settings = Settings(database_url=db_url, secret_key=generate_key(), sync_settle_seconds=0,
                        sync_lookback_seconds=3 * 24 * 3600, provider_max_retries=1)
    return Runtime(settings=settings, environ={"DEEPGRAM_API_KEY": dgemu.owner_key})


@pytest.fixture
def api(db_url, dgemu) -> Iterator[Api]:
    rt = make_runtime(db_url, dgemu)
    conn = ConnectionService(rt, environ={"DEEPGRAM_API_KEY": dgemu.owner_key}).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url, store_key=True
    )
    _tok, admin = TokenService(rt, actor="tests").create_admin("tests")
    base, server, thread = start_api(rt)
    yield Api(base, admin, rt, dgemu, conn.id)
    server.should_exit = True
    thread.join(timeout=10)
    rt.engine.dispose()


def problem_ok(resp: httpx.Response, status: int) -> dict:
    """Assert an RFC 9457 problem with this status and an actionable detail; return the body."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == status and body["title"] and len(body["detail"]) > 10, body
    return body


__all__ = ["Api", "CustomerService", "problem_ok", "start_api", "make_runtime"]
