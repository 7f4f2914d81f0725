"""BOLA and BOPLA over every route of ``keyledger serve`` (the REST API under /api/v1, the operator dashboard
at / and the customer portal at /portal), walked from the app itself so a new route is covered (or fails
here) the day it is added.

- Credentials: none, garbage, a revoked admin token, a revoked and an expired portal token of the owner,
  another customer's portal token (API) or portal session (web), the owner's portal token/session, admin.
- BOLA: the owner's objects (customer, keys, invoice, portal token) named in the URL; every non-admin,
  non-owner credential is refused (401 / 403 / 404, or the sign-in redirect), the response carries none of
  the owner's data or secrets, and the whole database is unchanged afterwards.
- BOPLA: the owner's own portal token sends the fields it may not set (plan, price, budget, limit, status,
  customer_id, currency...) to every writing route: refused or ignored, and customers, plans, budgets and
  invoices are unchanged (a before/after snapshot of every table).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from keyledger.bootstrap import create_server_app
from keyledger.customers.tokens import TokenService
from keyledger.db.tables_api import portal_tokens
from keyledger.db.tables_notifications import webhook_events
from keyledger.db.tables_usage import sync_runs
from keyledger.invoices.service import InvoiceService
from keyledger.notifications.service import WebhookService
from tests.security.support import db_snapshot, snapshot_diff
from tests.web.conftest import Site
from tests.web.test_web_http import csrf_of, portal_client

PUBLIC = {("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/docs"), ("GET", "/docs/oauth2-redirect"),
          ("GET", "/api/v1/health"), ("GET", "/login"), ("POST", "/login"), ("GET", "/portal/login"),
          ("POST", "/portal/login")}
# Fields a portal token may never set, sent to every writing route.
FORBIDDEN = {"plan": "premium", "price": "0.00", "unit_price": "0", "budget": "1000000", "limit": "1000000",
             "status": "active", "currency": "EUR", "billing_mode": "byo", "total": "0", "is_admin": True}
# Tables a portal token's write must never change.
PROTECTED = ("customers", "plans", "plan_versions", "budgets", "budget_periods", "invoices", "invoice_lines",
             "connections", "admin_tokens")


def routes(site: Site) -> list[tuple[str, str]]:
    """Every (method, path template) the server answers, API and web."""
    def walk(rs, prefix=""):
        for r in rs:
            if hasattr(r, "original_router"):
                yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
            elif getattr(r, "methods", None):
                for m in sorted(r.methods - {"HEAD"}):
                    yield m, prefix + r.path

    return sorted(set(walk(create_server_app(site.runtime).routes)))


def _ids(site: Site) -> dict[str, str]:
    rt = site.runtime
    hook = WebhookService(rt.engine, rt.cipher, rt.clock, actor="tests").add("https://hooks.example.com/kl")
    with rt.engine.connect() as db:
        token_id = db.execute(select(portal_tokens.c.id).where(
            portal_tokens.c.customer_id == site.acme.id)).scalars().first()
        run_id = db.execute(select(sync_runs.c.id)).scalars().first()
        event_id = db.execute(select(webhook_events.c.id)).scalars().first()
    assert token_id and run_id and event_id
    note = InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor="tests").credit(
        site.acme_invoice["id"], reason="bola", amount="0.01")
    key = site.acme_keys[0]
    return {"customer_id": site.acme.id, "key_id": key.id, "key_ref": key.id,
            "invoice_id": site.acme_invoice["id"], "token_id": token_id, "run_id": run_id,
            "event_id": event_id, "endpoint_id": hook["id"], "connection_id": key.connection_id,
            "plan_id": "starter", "action": "void", "credit_note_id": note["id"]}


def url_for(path: str, ids: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1)
        if name == "ref":
            return ids["invoice_id"] if "/invoices/" in path else ids["customer_id"]
        assert name in ids, f"new path parameter {name!r} in {path}: give it an owner's id here"
        return ids[name]

    return re.sub(r"{(\w+)}", value, path)


def body_for(method: str, path: str, ids: dict[str, str]) -> dict | None:
    """A valid body (so a refusal is about who asks, not what is sent)."""
    if not path.startswith("/api/") or method in ("GET", "DELETE"):
        return None
    p = path.removeprefix("/api/v1")
    bodies = {
        "/customers": {"name": "Intruder", "external_id": "intruder"},
        "/customers/{customer_id}": {"name": "Renamed"},
        "/customers/{customer_id}/tokens": {"ttl_seconds": 60},
        "/customers/{customer_id}/byo-connection": {"project_id": "p-1", "api_key": "k" * 40},
        "/customers/{customer_id}/budget": {"limit": "10.00"},
        "/webhook-endpoints": {"url": "https://hooks.example.com/x"},
        "/invoice-runs": {"period": datetime.now(UTC).strftime("%Y-%m")},
        "/connections": {"name": "c2", "project_id": "p-1", "api_key": "k" * 40},
        "/portal-tokens": {"customer_id": ids["customer_id"]},
        "/invoices/{invoice_id}/void": {"reason": "x"},
        "/invoices/{invoice_id}/credit-notes": {"reason": "x", "amount": "0.01"},
    }
    return bodies.get(p, {})


def leaks(site: Site, text: str) -> list[str]:
    owner = ["Acme Corp", "ap@acme.test", site.admin_token, site.portal_token, *site.secrets]
    return [s for s in owner if s in text]


def _api_client(site: Site, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=site.base_url, headers=headers, timeout=60, follow_redirects=False)


def _bad_tokens(site: Site) -> dict[str, str | None]:
    tokens = TokenService(site.runtime, actor="tests")
    revoked_admin_row, revoked_admin = tokens.create_admin("to-revoke")
    tokens.revoke_admin(revoked_admin_row.id)
    revoked = tokens.create_portal(site.acme.id)
    tokens.revoke_portal(revoked["id"])
    expired = tokens.create_portal(site.acme.id)
    with site.runtime.engine.begin() as db:
        db.execute(update(portal_tokens).where(portal_tokens.c.id == expired["id"]).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=5)))
    return {"none": None, "garbage": "klp_" + "x" * 43, "revoked admin": revoked_admin,
            "revoked portal": revoked["token"], "expired portal": expired["token"]}


def _refused_web(resp: httpx.Response) -> bool:
    if resp.status_code in (303, 302, 307):
        return resp.headers["location"] in ("/login", "/portal/login")
    return resp.status_code in (401, 403, 404, 405)


def _session(site: Site, token: str) -> Iterator[tuple[httpx.Client, str]]:
    with portal_client(site, token) as c:
        yield c, csrf_of(c.get("/portal"))


def test_bola_every_route_every_credential_refused_and_nothing_changes(site: Site):
    ids = _ids(site)
    bad = _bad_tokens(site)
    all_routes = routes(site)
    assert len(all_routes) >= 70, len(all_routes)
    before = db_snapshot(site.runtime.engine)
    cases = 0
    failures: list[tuple] = []

    def check(cred: str, method: str, path: str, resp: httpx.Response, ok) -> None:
        nonlocal cases
        cases += 1
        found = leaks(site, resp.text)
        if not ok(resp) or found:
            failures.append((cred, method, path, resp.status_code, found, resp.text[:200]))

    # API bearer credentials and the web without a session, on every route
    for cred, token in [*bad.items(), ("other customer's portal token", site.beta_portal_token)]:
        with _api_client(site, token) as c:
            for method, path in all_routes:
                if (method, path) in PUBLIC or path == "/static":
                    continue
                url = url_for(path, ids)
                resp = c.request(method, url, json=body_for(method, path, ids))
                if path.startswith(("/api/", "/metrics")) and cred != "other customer's portal token":
                    check(cred, method, path, resp, lambda r: r.status_code == 401)
                elif path.startswith(("/api/", "/metrics")):  # 403/404; a list is the caller's own rows
                    check(cred, method, path, resp, lambda r, own_list="{" not in path and method == "GET": (
                        r.status_code in (403, 404) or (own_list and r.status_code == 200
                                                        and site.acme.id not in r.text)))
                else:  # a bearer token is no web session: the sign-in page, never the content
                    check(cred, method, path, resp, _refused_web)
    # web: another customer's portal session (with its own valid CSRF token) on every page and form
    for c, csrf in _session(site, site.beta_portal_token):
        for method, path in all_routes:
            if (method, path) in PUBLIC or path.startswith(("/api/", "/metrics", "/static")):
                continue
            if path in ("/portal", "/portal/byo", "/portal/logout"):
                continue  # the session's own customer (checked for leaks below)
            resp = c.request(method, url_for(path, ids), data={"csrf": csrf} if method == "POST" else None)
            check("other customer's portal session", method, path, resp, _refused_web)
        home = c.get("/portal")
        check("other customer's portal session", "GET", "/portal", home, lambda r: r.status_code == 200)
        assert "Beta Industries" in home.text
    # web: the owner's portal session on operator pages and forms
    for c, csrf in _session(site, site.portal_token):
        for method, path in all_routes:
            if (method, path) in PUBLIC or path.startswith(("/api/", "/metrics", "/static", "/portal")):
                continue
            resp = c.request(method, url_for(path, ids), data={"csrf": csrf} if method == "POST" else None)
            cases += 1
            if not _refused_web(resp) or "Beta Industries" in resp.text:
                failures.append(("owner's portal session", method, path, resp.status_code, resp.text[:200]))
    assert failures == [], failures
    assert snapshot_diff(before, db_snapshot(site.runtime.engine)) == {}
    print(f"BOLA: {len(all_routes)} routes, {cases} route x credential cases, 0 leaks")


def test_admin_and_owner_reach_what_they_may(site: Site):
    """The other side of the matrix: every readable route answers the admin (never 5xx, never 401/403);
    the owner's portal token reads its own customer and is 403 on admin-only routes."""
    ids = _ids(site)
    problems = []
    with _api_client(site, site.admin_token) as admin, _api_client(site, site.portal_token) as own:
        for method, path in routes(site):
            if method != "GET" or not path.startswith("/api/") or (method, path) in PUBLIC:
                continue
            url = url_for(path, ids)
            params = {"period": datetime.now(UTC).strftime("%Y-%m")} if "reconciliation" in path else None
            r = admin.get(url, params=params)
            if r.status_code >= 500 or r.status_code in (401, 403):
                problems.append(("admin", path, r.status_code, r.text[:200]))
            o = own.get(url, params=params)
            shown = [x for x in (site.admin_token, *site.secrets, "Beta Industries") if x in o.text]
            if o.status_code not in (200, 403) or shown:
                problems.append(("owner portal", path, o.status_code, o.text[:200]))
    assert problems == [], problems


def test_bopla_portal_token_cannot_set_price_plan_budget_status_or_owner(site: Site):
    ids = _ids(site)
    engine = site.runtime.engine
    failures = []
    cases = 0
    with _api_client(site, site.portal_token) as c:
        for method, path in routes(site):
            if method == "GET" or not path.startswith("/api/") or (method, path) in PUBLIC:
                continue
            url = url_for(path, ids)
            base = body_for(method, path, ids) or {}
            for body in ({**base, **FORBIDDEN, "customer_id": site.beta.id},
                         {**base, "plan": "premium", "currency": "EUR"},
                         {**base, "limit": "1000000", "action": "notify"}):
                before = db_snapshot(engine)
                r = c.request(method, url, json=body)
                after = db_snapshot(engine)
                cases += 1
                changed = snapshot_diff(before, after)
                touched = sorted(set(changed) & set(PROTECTED))
                if r.status_code >= 500 or touched or (r.status_code >= 400 and changed):
                    failures.append((method, path, sorted(body), r.status_code, changed, r.text[:200]))
    # the portal's own form (BYO connect) with extra fields: they are not read
    for web, csrf in _session(site, site.portal_token):
        before = db_snapshot(engine)
        r = web.post("/portal/byo", data={"csrf": csrf, "project_id": "p-1", "api_key": "k" * 40,
                                          **{k: str(v) for k, v in FORBIDDEN.items()},
                                          "customer_id": site.beta.id})
        cases += 1
        touched = sorted(set(snapshot_diff(before, db_snapshot(engine))) & set(PROTECTED))
        if r.status_code >= 500 or touched:
            failures.append(("POST", "/portal/byo", r.status_code, touched, r.text[:200]))
    assert failures == [], failures
    print(f"BOPLA: {cases} writes with forbidden fields, 0 protected rows changed")
