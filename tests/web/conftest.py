"""Web UI fixtures: a live ``keyledger serve`` app (``bootstrap.create_server_app``: the API and the web UI)
in uvicorn on a free port, over a real database and a real dgemu, with data arranged through the real
services (customers, keys created at dgemu, usage injected into dgemu then synced, a budget, invoices).

- ``site``: on SQLite and PostgreSQL (``db_url``), for the plain-HTTP tests.
- ``browser_site``: SQLite only, built once per module, for the (slower) browser tests.
- ``browser``: headless Debian Chromium driven by Playwright (never ``playwright install``). When Chromium is
  missing the browser tests are skipped, unless ``KEYLEDGER_REQUIRE_BROWSER`` is set (CI): then they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from keyledger.bootstrap import Runtime, create_server_app
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.customers.tokens import TokenService
from keyledger.invoices.service import InvoiceService
from keyledger.pricing.service import import_plan_text
from keyledger.usage.service import SyncService
from tests.api.conftest import _Server
from tests.conftest import free_port
from tests.usage_support import inject

CHROMIUM = os.environ.get("KEYLEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

PLAN = """
id: starter
name: Starter
currency: USD
mode: rate_card
tax_percent: "10"
effective_from: 2025-01-01
rates:
  "*::nova-3": {unit: minute, price: "0.0100"}
  "*::nova-2": {unit: minute, price: "0.0080"}
"""


@dataclass
class Site:
    base_url: str
    runtime: Runtime
    dgemu: object
    admin_token: str
    acme: object
    beta: object
    acme_keys: list
    beta_keys: list
    acme_invoice: dict
    beta_invoice: dict
    portal_token: str  # acme's
    beta_portal_token: str
    secrets: list  # every key secret created (must never appear on a page)

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60, follow_redirects=False, **kw)


def _traffic(accessor: str, at: datetime, seconds: int, model: str = "nova-3") -> dict:
    return {"api_key_id": accessor, "created": at.isoformat().replace("+00:00", "Z"), "endpoint": "listen",
            "method": "sync", "model": model, "duration_seconds": seconds}


def _start(rt: Runtime):
    import threading
    import time

    import uvicorn

    port = free_port()
    server = _Server(uvicorn.Config(create_server_app(rt), host="127.0.0.1", port=port, log_level="warning",
                                    access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def build(db_url: str, dgemu) -> tuple[Site, object, object]:
    settings = Settings(database_url=db_url, secret_key=generate_key(), sync_settle_seconds=0,
                        sync_lookback_seconds=3 * 24 * 3600, provider_max_retries=1)
    rt = Runtime(settings=settings, environ={"DEEPGRAM_API_KEY": dgemu.owner_key})
    ConnectionService(rt, environ={"DEEPGRAM_API_KEY": dgemu.owner_key}).add(
        "main", project_id=dgemu.project_id, base_url=dgemu.base_url, store_key=True)
    import_plan_text(rt.engine, PLAN, name="starter.yaml", clock=rt.clock)
    customers = CustomerService(rt, actor="tests")
    acme = customers.add("Acme Corp", external_id="acme", email="ap@acme.test", plan="starter")
    beta = customers.add("Beta Industries", external_id="beta", plan="starter")
    keys = KeyService(rt, actor="tests")
    issued = [keys.create(acme.id, comment="prod"), keys.create(acme.id, comment="staging"),
              keys.create(beta.id, comment="beta-prod")]
    acme_keys, beta_keys = [i.key for i in issued[:2]], [issued[2].key]
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = [max(now - timedelta(days=d, hours=1), month_start) for d in (2, 1, 0)]
    k1, k2, kb = acme_keys[0].api_key_id, acme_keys[1].api_key_id, beta_keys[0].api_key_id
    inject(dgemu, [
        _traffic(k1, days[0], 600), _traffic(k2, days[0], 300, "nova-2"),
        _traffic(k1, days[1], 900), _traffic(k2, days[1], 450, "nova-2"),
        _traffic(k1, days[2], 1200), _traffic(k2, days[2], 240, "nova-2"),
        _traffic(kb, days[1], 3600), _traffic(kb, days[2], 1800),
    ])
    [report] = SyncService(engine=rt.engine, settings=rt.settings, clock=rt.clock,
                           open_provider=lambda c: rt.provider_for(c.id), lease_wait_seconds=0).sync(
        since=now - timedelta(days=3))
    assert report.as_json()["status"] == "succeeded", report.as_json()
    BudgetService(rt, actor="tests").set("acme", limit="0.50", action="notify")
    invoices = InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor="tests")
    period = now.strftime("%Y-%m")
    invoices.run(period)
    by_customer = {i["customer_id"]: i for i in invoices.list(period=period)}
    acme_inv = invoices.finalize(by_customer[acme.id]["id"])
    acme_inv = invoices.get(by_customer[acme.id]["id"])
    beta_inv = invoices.get(by_customer[beta.id]["id"])
    tokens = TokenService(rt, actor="tests")
    _tok, admin = tokens.create_admin("web-tests")
    portal = tokens.create_portal(acme.id)["token"]
    beta_portal = tokens.create_portal(beta.id)["token"]
    base, server, thread = _start(rt)
    site = Site(base, rt, dgemu, admin, acme, beta, acme_keys, beta_keys, acme_inv, beta_inv, portal,
                beta_portal, [i.secret for i in issued])
    return site, server, thread


def stop(site: Site, server, thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)
    site.runtime.engine.dispose()


@pytest.fixture
def site(db_url, dgemu) -> Iterator[Site]:
    s, server, thread = build(db_url, dgemu)
    yield s
    stop(s, server, thread)


@pytest.fixture(scope="module")
def browser_site(_sqlite_template, _dgemu_session, tmp_path_factory) -> Iterator[Site]:
    path = tmp_path_factory.mktemp("web") / "keyledger.db"
    shutil.copy(_sqlite_template, path)
    _dgemu_session.reset()
    s, server, thread = build(f"sqlite:///{path}", _dgemu_session)
    yield s
    stop(s, server, thread)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    required = bool(os.environ.get("KEYLEDGER_REQUIRE_BROWSER"))
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"KEYLEDGER_REQUIRE_BROWSER is set but Chromium is missing at {CHROMIUM} "
                        "(apt-get install chromium)")
        pytest.skip(f"Chromium not installed at {CHROMIUM}")
    if required:
        import playwright.sync_api as sync_api  # missing is an error in CI, never a skip
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
