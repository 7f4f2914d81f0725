"""The web UI over plain HTTP (SQLite and PostgreSQL): sign-in, session cookie flags, CSRF on every form,
friendly error pages, every operator page renders, and the portal's isolation (another customer's invoice is
404; nothing of another customer is shown; no key secret is ever rendered)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from keyledger.budgets.service import BudgetService
from keyledger.customers.byo import ByoService
from keyledger.customers.service import CustomerService
from keyledger.customers.tokens import TokenService
from keyledger.notifications.service import WebhookService
from tests.web.conftest import Site

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(resp: httpx.Response) -> str:
    m = CSRF.search(resp.text)
    assert m, resp.text[:500]
    return m.group(1)


@contextmanager
def admin_client(site: Site) -> Iterator[httpx.Client]:
    with site.http() as c:
        page = c.get("/login")
        r = c.post("/login", data={"csrf": csrf_of(page), "token": site.admin_token})
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        yield c


@contextmanager
def portal_client(site: Site, token: str) -> Iterator[httpx.Client]:
    with site.http() as c:
        r = c.get("/portal/login", params={"token": token})
        assert r.status_code == 303 and r.headers["location"] == "/portal", r.text
        yield c


def test_sign_in_session_cookie_and_csrf(site: Site):
    with site.http() as anon:
        assert anon.get("/").headers["location"] == "/login"
        assert anon.get(f"/customers/{site.acme.id}").status_code == 303
        page = anon.get("/login")
        assert page.status_code == 200 and 'for="token"' in page.text
        # a forged sign-in (no CSRF token) is refused with a page, not a stack trace
        forged = anon.post("/login", data={"token": site.admin_token, "csrf": "nope"})
        assert forged.status_code == 403 and "expired" in forged.text and "set-cookie" not in forged.headers
        bad = anon.post("/login", data={"csrf": csrf_of(page), "token": "kla_wrong"})
        assert bad.status_code == 401 and "unknown" in bad.text
        # a portal token does not open the operator dashboard
        as_portal = anon.post("/login", data={"csrf": csrf_of(page), "token": site.portal_token})
        assert as_portal.status_code == 401
        ok = anon.post("/login", data={"csrf": csrf_of(page), "token": site.admin_token})
        cookie = ok.headers["set-cookie"]
        assert "kl_session=" in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert site.admin_token not in cookie and site.admin_token[4:12] not in cookie  # sealed, not readable
        home = anon.get("/")
        assert home.status_code == 200 and "Overview" in home.text and 'id="chart-data"' in home.text
        assert "Acme Corp" in home.text  # top customers
        # a tampered cookie is no session
        anon.cookies.set("kl_session", anon.cookies["kl_session"][:-2] + "00")
        assert anon.get("/").status_code == 303


def test_operator_pages_render_and_forms_need_csrf(site: Site):
    with admin_client(site) as c:
        for path in ("/", "/customers", "/customers?q=acme", "/customers?status=suspended",
                     f"/customers/{site.acme.id}", "/invoices", f"/invoices/{site.acme_invoice['id']}",
                     f"/invoices/{site.acme_invoice['id']}/void",
                     f"/invoices/{site.beta_invoice['id']}/finalize",
                     f"/customers/{site.acme.id}/keys/{site.acme_keys[0].id}/revoke",
                     "/reconciliation", "/sync-runs", "/webhooks"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:300])
            assert r.headers["content-type"].startswith("text/html")
            for secret in site.secrets:
                assert secret not in r.text, path
        assert "Beta Industries" not in c.get("/customers?q=acme").text
        detail = c.get(f"/customers/{site.acme.id}")
        assert all(k.id in detail.text for k in site.acme_keys) and "<meter" in detail.text
        rec = c.get("/reconciliation").text
        assert "matches" in rec
        # revoke without the CSRF token: refused, key untouched
        key = site.acme_keys[1]
        r = c.post(f"/customers/{site.acme.id}/keys/{key.id}/revoke", data={"csrf": "x"})
        assert r.status_code == 403
        assert f'data-key="{key.id}"' in c.get(f"/customers/{site.acme.id}").text
        # another customer's key under this customer is not found
        foreign = site.beta_keys[0].id
        assert c.get(f"/customers/{site.acme.id}/keys/{foreign}/revoke").status_code == 404
        r = c.post(f"/customers/{site.acme.id}/keys/{foreign}/revoke", data={"csrf": csrf_of(detail)})
        assert r.status_code == 404
        # finalize through the confirmation page
        page = c.get(f"/invoices/{site.beta_invoice['id']}/finalize")
        r = c.post(f"/invoices/{site.beta_invoice['id']}/finalize", data={"csrf": csrf_of(page)})
        assert r.status_code == 303
        shown = c.get(r.headers["location"]).text
        assert "INV-" in shown and "finalized" in shown
        # errors are friendly pages
        missing = c.get("/invoices/inv_nope")
        assert missing.status_code == 404 and "Not found" in missing.text and "text/html" in missing.headers[
            "content-type"]
        assert c.get("/customers/nobody").status_code == 404
        html = {"Accept": "text/html"}
        nowhere = c.get("/no/such/page", headers=html)
        assert nowhere.status_code == 404 and "Not found" in nowhere.text
        api = c.get("/api/v1/no/such/thing", headers=html)
        assert api.status_code == 404 and api.headers["content-type"].startswith("application/problem+json")
        pdf = c.get(f"/invoices/{site.acme_invoice['id']}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_portal_isolation(site: Site):
    with portal_client(site, site.portal_token) as c:
        home = c.get("/portal")
        assert home.status_code == 200 and "Acme Corp" in home.text
        for foreign in ("Beta Industries", site.beta.id, site.beta.external_id, site.beta_invoice["id"],
                        site.beta_keys[0].id, site.beta_keys[0].api_key_id, *site.secrets):
            assert foreign not in home.text, foreign
        assert site.acme_invoice["number"] in home.text
        own = c.get(f"/portal/invoices/{site.acme_invoice['id']}/pdf")
        assert own.status_code == 200 and own.content.startswith(b"%PDF")
        beta_inv = site.beta_invoice["id"]
        for path in (f"/portal/invoices/{beta_inv}", f"/portal/invoices/{beta_inv}/pdf",
                     "/portal/invoices/inv_does_not_exist"):
            r = c.get(path)
            assert r.status_code == 404 and "Beta" not in r.text, path
        # the portal session does not open the operator dashboard
        assert c.get("/").status_code == 303 and c.get(f"/invoices/{beta_inv}").status_code == 303
        # a BYO connect with a bad key is a friendly error page, and needs CSRF
        assert c.post("/portal/byo", data={"csrf": "x", "project_id": "p", "api_key": "k"}).status_code == 403
        r = c.post("/portal/byo", data={"csrf": csrf_of(home), "project_id": "nope", "api_key": "bad"})
        assert 400 <= r.status_code < 500 and "text/html" in r.headers["content-type"], r.text[:300]
    with site.http() as anon:
        assert anon.get("/portal").headers["location"] == "/portal/login"
        bad = anon.get("/portal/login", params={"token": "klp_nope"})
        assert bad.status_code == 401 and "expired" in bad.text


def test_rotate_shows_the_new_secret_once(site: Site):
    key = site.acme_keys[0]
    with admin_client(site) as c:
        page = c.get(f"/customers/{site.acme.id}")
        r = c.post(f"/customers/{site.acme.id}/keys/{key.id}/rotate", data={"csrf": csrf_of(page)})
        assert r.status_code == 200 and "shown on this page only" in r.text
        secret = re.search(r'id="secret" readonly value="([^"]+)"', r.text).group(1)
        assert len(secret) > 20
        after = c.get(f"/customers/{site.acme.id}").text
        assert secret not in after and f'data-key="{key.id}"' in after
        assert secret not in c.get("/").text
    with portal_client(site, site.portal_token) as p:
        assert secret not in p.get("/portal").text
    with site.dgemu.client() as dg:  # the old key is gone at Deepgram
        assert dg.get(f"/v1/projects/{site.dgemu.project_id}/keys/{key.api_key_id}").status_code == 404


def test_webhooks_page_and_replay(site: Site):
    rt = site.runtime
    hooks = WebhookService(rt.engine, rt.cipher, rt.clock, actor="tests")
    endpoint = hooks.add("https://hooks.example.test/keyledger")
    BudgetService(rt, actor="tests").set("acme", limit="0.01", action="notify")
    BudgetService(rt, actor="tests").evaluate("acme")  # crosses thresholds: events for the endpoint
    events = hooks.events()
    assert events
    with admin_client(site) as c:
        page = c.get("/webhooks")
        assert page.status_code == 200 and endpoint["id"] in page.text and events[0]["id"] in page.text
        assert endpoint["secret"] not in page.text
        r = c.post(f"/webhooks/events/{events[0]['id']}/replay", data={"csrf": csrf_of(page)})
        assert r.status_code == 303 and "queued for delivery again" in c.get(r.headers["location"]).text
        alerts = c.get("/").text.split('id="alerts-h"')[1]  # the budget alert is on the overview
        assert f'href="/customers/{site.acme.id}">acme</a>' in alerts


def test_portal_byo_connect(site: Site):
    rt = site.runtime
    with site.dgemu.client() as dg:
        own = dg.post("/_emulator/projects", json={"name": "gamma's own Deepgram"}).json()
    gamma = CustomerService(rt, actor="tests").add("Gamma Ltd", external_id="gamma", plan="starter")
    token = TokenService(rt, actor="tests").create_portal(gamma.id)["token"]
    with portal_client(site, token) as c:
        home = c.get("/portal")
        assert 'for="project_id"' in home.text and 'for="api_key"' in home.text
        r = c.post("/portal/byo", data={"csrf": csrf_of(home), "project_id": own["project_id"],
                                        "api_key": own["owner_key"]})
        assert r.status_code == 303 and r.headers["location"] == "/portal?done=connected", r.text
        after = c.get(r.headers["location"]).text
        assert "Your Deepgram project is connected" in after and own["owner_key"] not in after
        assert "Acme" not in after and "Beta" not in after
    assert ByoService(rt).status(gamma.id).connection_id is not None


def test_daily_totals_and_chart_data_stay_exact():
    from decimal import Decimal

    from keyledger.web.common import chart_data, daily_totals

    def row(day, item, q, cost):
        return {"day": day, "line_item": item, "unit": "minute", "quantity": Decimal(q),
                "cost_usd": Decimal(cost), "requests": 1}

    lines = [row("2026-11-02", "a", "1.5", "0.0150000001"), row("2026-11-01", "a", "1", "0.01"),
             row("2026-11-02", "a", "2", "0.02"), row("2026-11-02", "b", "3", "0.03")]
    merged = daily_totals(lines)
    assert [(m["day"], m["line_item"]) for m in merged] == [("2026-11-01", "a"), ("2026-11-02", "a"),
                                                            ("2026-11-02", "b")]
    assert merged[1]["quantity"] == Decimal("3.5") and merged[1]["cost_usd"] == Decimal("0.0350000001")
    assert merged[1]["requests"] == 2 and lines[0]["quantity"] == Decimal("1.5")  # inputs untouched
    chart = chart_data(lines)
    assert chart["labels"] == ["2026-11-01", "2026-11-02"]
    assert chart["datasets"] == [{"label": "a", "data": ["0.01", "0.0350000001"]},
                                 {"label": "b", "data": ["0", "0.03"]}]


def test_credit_and_mark_paid_through_confirmation_pages(site: Site):
    inv = site.acme_invoice
    at = f"/invoices/{inv['id']}"
    with admin_client(site) as c:
        shown = c.get(at).text
        assert f'href="{at}/credit"' in shown and f'href="{at}/mark-paid"' in shown
        assert "Credit notes" not in shown
        assert f'href="/invoices/{site.beta_invoice["id"]}/credit"' not in c.get(
            f"/invoices/{site.beta_invoice['id']}").text  # a draft cannot be credited
        csrf = csrf_of(c.get(f"{at}/credit"))
        # refused: no CSRF token; too many decimal places (a friendly page); nothing issued either time
        assert c.post(f"{at}/credit", data={"csrf": "x", "reason": "outage"}).status_code == 403
        bad = c.post(f"{at}/credit", data={"csrf": csrf, "reason": "outage", "amount": "0.001"})
        assert bad.status_code == 422 and "decimal places" in bad.text
        assert bad.headers["content-type"].startswith("text/html")
        assert "Credit notes" not in c.get(at).text
        done = c.post(f"{at}/credit", data={"csrf": csrf, "reason": "outage", "amount": "0.01"})
        assert done.status_code == 303 and done.headers["location"] == at
        shown = c.get(at).text
        assert "Credit notes" in shown and "outage" in shown and 'data-credit-note="CN-' in shown
        [note_id] = re.findall(r'href="/credit-notes/(crn_\w+)/pdf"', shown)
        assert c.get(f"/credit-notes/{note_id}/pdf").content.startswith(b"%PDF-")
        # whole lines, picked on the page: not together with an amount; then that line is marked credited
        assert 'name="line_2"' in c.get(f"{at}/credit").text
        both = c.post(f"{at}/credit", data={"csrf": csrf, "reason": "x", "amount": "0.01", "line_2": "1"})
        assert both.status_code == 422 and "not both" in both.text
        by_line = c.post(f"{at}/credit", data={"csrf": csrf, "reason": "wrong model", "line_2": "1"})
        assert by_line.status_code == 303
        assert re.search(r'name="line_2" value="1" disabled>', c.get(f"{at}/credit").text)
        assert "wrong model" in c.get(at).text and c.get(at).text.count("data-credit-note=") == 2
        assert c.post(f"{at}/mark-paid", data={"csrf": csrf_of(c.get(f"{at}/mark-paid"))}).status_code == 303
        shown = c.get(at).text
        assert 'badge paid' in shown and f'href="{at}/mark-paid"' not in shown
    with portal_client(site, site.portal_token) as c:  # the customer sees its credit note
        own = c.get(f"/portal/invoices/{inv['id']}").text
        assert "outage" in own and f'href="/portal/credit-notes/{note_id}/pdf"' in own
        assert c.get(f"/portal/credit-notes/{note_id}/pdf").content.startswith(b"%PDF-")
    with portal_client(site, site.beta_portal_token) as c:  # another customer's: not found
        assert c.get(f"/portal/credit-notes/{note_id}/pdf").status_code == 404
