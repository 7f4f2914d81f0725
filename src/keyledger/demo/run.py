"""``keyledger demo``: the product end to end against a private dgemu, on a fresh SQLite database.

Steps: start dgemu → migrate → a local webhook receiver (a thread that verifies every signature) and its
endpoint → connection → plans → three customers with keys → a month of traffic (plus the current month so
far, live calls, and a key that belongs to no customer) → sync → usage → reconcile → invoices (finalized,
exported as PDF/HTML/CSV/JSON) → summary → a ``revoke`` budget that one customer has exceeded: the next
sync revokes its key (dgemu then refuses it) → the webhooks are delivered and the receiver prints what it
verified.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from keyledger.budgets import model as budget_model
from keyledger.budgets import store as budget_store
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.core.errors import KeyledgerError, ProviderError
from keyledger.core.money import round_money
from keyledger.customers.byo import ByoService
from keyledger.customers.grants import GrantService
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.migrate import upgrade
from keyledger.demo import traffic
from keyledger.invoices.render import Issuer, render
from keyledger.invoices.service import InvoiceService
from keyledger.notifications import signing
from keyledger.notifications.service import WebhookService
from keyledger.pricing.service import import_plan_file
from keyledger.usage import price_check_service
from keyledger.usage import service as usage_service
from keyledger.worker.jobs import deliverer, sync_then_budgets

PLANS_DIR = Path(__file__).parent / "plans"


@dataclass(frozen=True)
class DemoCustomer:
    name: str
    external_id: str
    plan: str
    profile: str
    timezone: str


CUSTOMERS = (
    DemoCustomer("Acme Voice Agents", "acme", "growth", "voice-agent", "America/New_York"),
    DemoCustomer("Globex Transcription", "globex", "standard", "transcription", "UTC"),
    DemoCustomer("Initech Notes", "initech", "at-cost", "mixed", "Europe/Berlin"),
)


@dataclass
class Emulator:
    base_url: str
    ws_url: str
    project_id: str
    owner_key: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_emulator(port: int, log_path: Path) -> Emulator:
    """Start dgemu as its own process (keyledger never imports it) and wait until it answers."""
    if not _port_free(port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    project_id = "5e1f0d6a-0000-4000-8000-00000000de70"
    owner_key = "dgemu_demo_owner_" + os.urandom(12).hex()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgemu", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--project-id", project_id, "--owner-key", owner_key],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProviderError(f"dgemu exited at start; see {log_path}")
        try:
            if httpx.get(f"{base}/_emulator/health", timeout=1).status_code == 200:
                return Emulator(base, f"ws://127.0.0.1:{port}", project_id, owner_key, proc)
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise ProviderError("dgemu did not start within 30 s")


class WebhookReceiver:
    """The operator's webhook receiver, as a thread: it verifies each request's Standard Webhooks signature
    (and timestamp) with the endpoint's secret and keeps the events it accepted."""

    def __init__(self) -> None:
        self.secret = ""
        self.verified: list[dict] = []
        self.rejected = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    signing.verify(outer.secret, dict(self.headers.items()), body, now=int(time.time()))
                except signing.SignatureError:
                    outer.rejected += 1
                    self.send_response(400)
                else:
                    event = json.loads(body)
                    event["id"] = self.headers["webhook-id"]
                    outer.verified.append(event)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keyledger-webhooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _unknown_key(emu: Emulator) -> str:
    """A key made in the Deepgram console, outside keyledger: its usage is unattributed."""
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Token {emu.owner_key}"}) as c:
        r = c.post(f"/v1/projects/{emu.project_id}/keys",
                   json={"comment": "operator's own testing key", "scopes": ["usage:write"]})
        r.raise_for_status()
        return r.json()["api_key_id"]


def run_demo(
    make_runtime: Callable[[Settings, dict[str, str]], Any],
    *,
    out_dir: Path,
    port: int = 8765,
    seed: int = 7,
    console: Console | None = None,
    serve: Callable[[Any, Console], None] | None = None,
) -> dict[str, Any]:
    """Run the whole demo; returns a summary (also printed). ``make_runtime`` comes from bootstrap;
    ``serve(runtime, console)``, when given, serves the dashboard on the demo data while dgemu still runs."""
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path = out_dir / "keyledger-demo.db"
    for stale in out_dir.glob("keyledger-demo.db*"):
        stale.unlink()
    emu = start_emulator(port, out_dir / "dgemu.log")
    try:
        summary, rt = _run(make_runtime, emu, out_dir, db_path, seed, console)
        if serve is not None:
            serve(rt, console)
        return summary
    finally:
        emu.stop()


def _run(make_runtime, emu: Emulator, out_dir: Path, db_path: Path, seed: int, console: Console):
    settings = Settings(
        database_url=f"sqlite:///{db_path}",
        secret_key=generate_key(),
        config_path=str(Path(tempfile.gettempdir()) / "keyledger-demo-unused.toml"),
        sync_settle_seconds=0,  # the emulator's log is complete at once
        webhook_allow_private_networks=True,  # the demo's receiver listens on 127.0.0.1
    )
    environ = {**os.environ, "DEEPGRAM_API_KEY": emu.owner_key}
    rt = make_runtime(settings, environ)
    upgrade(rt.engine)
    console.print(f"[bold]dgemu[/] at {emu.base_url}, project {emu.project_id}")
    receiver = WebhookReceiver()
    try:
        return _run_with_receiver(rt, environ, emu, out_dir, seed, console, receiver), rt
    finally:
        receiver.close()


def _run_with_receiver(rt, environ, emu: Emulator, out_dir: Path, seed: int, console: Console, receiver):
    endpoint = WebhookService(rt.engine, rt.cipher, rt.clock, actor="demo").add(receiver.url)
    receiver.secret = endpoint["secret"]
    console.print(f"webhook endpoint {endpoint['id']} -> {receiver.url} (every event, signed)")

    connection = ConnectionService(rt, actor="demo", environ=environ).add(
        "dgemu", project_id=emu.project_id, base_url=emu.base_url, store_key=True
    )
    for plan_file in sorted(PLANS_DIR.iterdir()):
        if plan_file.suffix in {".yaml", ".yml", ".toml"}:
            import_plan_file(rt.engine, plan_file, clock=rt.clock, actor="demo")
    customers, keys = CustomerService(rt, actor="demo"), KeyService(rt, actor="demo")
    key_of: dict[str, Any] = {}
    for c in CUSTOMERS:
        customers.add(c.name, external_id=c.external_id, plan=c.plan, timezone=c.timezone,
                      email=f"billing@{c.external_id}.example")
        key_of[c.external_id] = keys.create(c.external_id, comment=f"{c.name} production key")
    console.print(f"connection [bold]{connection.name}[/], {len(CUSTOMERS)} customers with their own keys")

    now = rt.clock.now().astimezone(UTC)
    month_start, this_month = traffic.previous_month(now)
    rng = random.Random(seed)
    records: list[dict] = []
    for c in CUSTOMERS:
        profile = traffic.PROFILES[c.profile]
        records += traffic.month_of_records(key_of[c.external_id].key.api_key_id, profile, month_start,
                                            now - timedelta(minutes=5), rng)
    records += traffic.month_of_records(_unknown_key(emu), traffic.PROFILES["internal"], month_start,
                                        now - timedelta(minutes=5), rng)
    injected = traffic.inject(emu.base_url, emu.project_id, emu.owner_key, records)
    injected += _bring_your_own_account(rt, emu, console, month_start, now, rng)
    live = sum(traffic.live_calls(emu.base_url, emu.ws_url, key_of[c.external_id].secret) for c in CUSTOMERS)
    console.print(f"traffic: {injected} requests since {month_start:%Y-%m-%d} and {live} live calls")

    sync = usage_service.SyncService(
        engine=rt.engine, settings=rt.settings, clock=rt.clock,
        open_provider=lambda conn: rt.provider_for(conn.id),
    )
    runs = sync.sync(since=month_start, until=now + timedelta(seconds=1))
    synced = sum(r.inserted for r in runs)
    console.print(f"sync: {synced} records into the ledger")

    period = f"{month_start:%Y-%m}"
    recon = usage_service.reconcile(rt.engine, open_provider=lambda conn: rt.provider_for(conn.id),
                                    period=period, connection=None,
                                    price_check=price_check_service.config_from(rt.settings))
    invoices = InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor="demo")
    report = invoices.run(period, finalize=True)
    if report.failed:
        raise KeyledgerError(f"invoice run failed: {report.failed[0].message}")
    issuer = Issuer.from_settings(rt.settings)
    summary_rows = []
    for entry in report.entries:
        inv = invoices.get(entry.invoice_id)
        for fmt in ("pdf", "html", "csv", "json"):
            (out_dir / f"{inv['number']}.{fmt}").write_bytes(render(inv, fmt, issuer))
        usage = usage_service.usage_report(rt.engine, customer=entry.customer, start=month_start.date(),
                                           end=(this_month - timedelta(days=1)).date(), by="line-item")
        _print_usage(console, inv["number"], entry.customer, usage)
        summary_rows.append({
            "customer": entry.customer, "invoice": inv["number"], "currency": inv["currency"],
            "requests": usage["requests"], "provider_cost_usd": usage["cost_usd"], "total": inv["total"],
        })
    _print_summary(console, period, summary_rows, recon, out_dir)
    _browser_token_example(rt, emu, console)
    budget = _budget_breach(rt, emu, console, key_of["globex"])
    _deliver_webhooks(rt, console, receiver)
    hooks = [e["type"] for e in receiver.verified]
    return {
        "period": period, "invoices": summary_rows, "reconcile": recon, "synced": synced,
        "budget": budget, "webhooks": hooks,
    }


BYO_CUSTOMER = DemoCustomer("Umbrella Labs", "umbrella", "at-cost", "mixed", "UTC")


def _bring_your_own_account(rt, emu: Emulator, console: Console, start, now, rng) -> int:
    """A customer who pays Deepgram directly: they hand over a key of their own project once; keyledger
    mints a dedicated usage key there, keeps only that one, and shows (does not bill) their usage."""
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Token {emu.owner_key}"}) as c:
        r = c.post("/_emulator/projects", json={"name": "Umbrella Labs' own Deepgram account"})
        r.raise_for_status()
        own = r.json()
    c = BYO_CUSTOMER
    CustomerService(rt, actor="demo").add(c.name, external_id=c.external_id, plan=c.plan,
                                          email=f"billing@{c.external_id}.example")
    result = ByoService(rt, actor="demo", base_url=emu.base_url).connect(
        c.external_id, project_id=own["project_id"], api_key=own["owner_key"]
    )
    records = traffic.month_of_records(result.api_key_id, traffic.PROFILES[c.profile], start,
                                       now - timedelta(minutes=5), rng)
    created = traffic.inject(emu.base_url, own["project_id"], own["owner_key"], records)
    console.print(
        f"BYO: {c.name} connected its own Deepgram project {own['project_id']}; keyledger minted key "
        f"{result.api_key_id} there (usage:write, usage:read), stored only that, and forgot the key it was "
        f"handed; {created} requests of theirs will be shown, not billed"
    )
    return created


def _browser_token_example(rt, emu: Emulator, console: Console) -> None:
    """What an app's backend does for a browser client: a short-lived token from the customer's key."""
    grant = GrantService(rt, actor="demo").grant("acme", ttl_seconds=60)
    console.print(
        "browser token: POST /api/v1/customers/acme/tokens {\"ttl_seconds\": 60} -> "
        f"{{\"access_token\": \"{grant.access_token[:12]}…\", \"expires_in\": {grant.expires_in}}}; "
        f"the browser then calls {emu.ws_url}/v1/listen with 'Authorization: Bearer <token>', and that "
        "usage is attributed to acme"
    )


def _budget_breach(rt, emu: Emulator, console: Console, issued) -> dict[str, Any]:
    """Globex gets a ``revoke`` budget below what it has spent this month; the next sync enforces it."""
    customer = CustomerService(rt, actor="demo").get("globex")
    period = budget_model.period_at(rt.clock.now(), customer.timezone)
    with rt.engine.connect() as db:
        spent = budget_store.spend(db, customer.id, period)
    limit = max(round_money(spent * Decimal("0.8"), "USD"), Decimal("0.01"))
    BudgetService(rt, actor="demo").set("globex", limit=str(limit), action="revoke")
    console.print(
        f"budget: globex may spend {limit} USD in {period.key} (revoke at 100 %); it has spent "
        f"{round_money(spent, 'USD')} USD"
    )
    outcome = sync_then_budgets(rt, deliver_seconds=0)  # `keyledger sync` evaluates budgets after it commits
    if outcome.error is not None:
        raise outcome.error
    [row] = BudgetService(rt).list()
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Token {issued.secret}"}) as c:
        status = c.post("/v1/speak", json={"text": "still there?"}).status_code
    console.print(
        f"sync -> budget {row['state']}: globex is {CustomerService(rt).get('globex').status}; "
        f"its key {issued.key.api_key_id} now gets HTTP {status} from Deepgram (dgemu)"
    )
    return {"state": row["state"], "limit": limit, "spent": row["spent"], "key_status_at_deepgram": status}


def _deliver_webhooks(rt, console: Console, receiver: WebhookReceiver) -> None:
    deliverer(rt).deliver_due()
    table = Table(title="webhooks the receiver verified (Standard Webhooks signatures)", title_justify="left")
    for col in ("webhook-id", "event", "about"):
        table.add_column(col)
    for e in receiver.verified:
        data = e.get("data", {})
        about = data.get("number") or data.get("external_id") or data.get("key_id") or ""
        if e["type"] == "budget.threshold_reached":
            about = f"{data.get('external_id')} {data.get('threshold')} %"
        table.add_row(e["id"], e["type"], str(about))
    console.print(table)
    console.print(f"webhooks: {len(receiver.verified)} verified, {receiver.rejected} rejected")


def _print_usage(console: Console, number: str, customer: str, usage: dict) -> None:
    table = Table(title=f"{customer}: usage by line item (invoice {number})", title_justify="left")
    for col in ("line item", "unit", "quantity", "requests", "Deepgram cost (USD)"):
        table.add_column(col, justify="left" if col in ("line item", "unit") else "right")
    for line in usage["lines"]:
        table.add_row(line["line_item"], line["unit"], f"{line['quantity']:.2f}", str(line["requests"]),
                      str(round_money(line["cost_usd"], "USD")))
    console.print(table)


def _print_summary(console: Console, period: str, rows: list[dict], recon: dict, out_dir: Path) -> None:
    table = Table(title=f"keyledger demo — {period}")
    for col in ("customer", "requests", "Deepgram cost (USD)", "invoice", "total"):
        table.add_column(col, justify="left" if col in ("customer", "invoice") else "right")
    for r in rows:
        table.add_row(r["customer"], str(r["requests"]), str(round_money(r["provider_cost_usd"], "USD")),
                      r["invoice"], f"{r['total']} {r['currency']}")
    console.print(table)
    usd = lambda v: str(round_money(Decimal(v), "USD"))  # noqa: E731
    console.print(
        f"reconciliation {period}: Deepgram billed {usd(recon['provider_total_usd'])} USD = "
        f"attributed {usd(recon['attributed_usd'])} + unattributed {usd(recon['unattributed_usd'])}; "
        f"difference {usd(recon['difference_usd'])}"
    )
    check = recon["price_check"]
    verdict = "all agree" if check["agrees"] else f"{check['disagreeing_records']} disagree"
    unknown = ", ".join(check["unknown_line_items"])
    console.print(
        f"price check (keyledger's copy of Deepgram's {check['tier']} list): {check['checked_records']} "
        f"records, {verdict}; Deepgram {usd(check['provider_usd'])} USD vs list "
        f"{usd(check['expected_usd'])} USD" + (f"; no list price for {unknown}" if unknown else "")
    )
    console.print(f"invoices written to {out_dir}/ (PDF, HTML, CSV, JSON)")
