"""The web UI in real headless Chromium (Debian's, driven by Playwright) against a live server — SQLite only,
to keep CI time low (the same pages are covered on SQLite and PostgreSQL over plain HTTP in
test_web_http.py). Every request a page makes must go to the local server (nothing from the internet).
Screenshots of the main pages are taken; with KEYLEDGER_SCREENSHOTS=1 they refresh docs/screenshots/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from keyledger.budgets.service import BudgetService
from keyledger.notifications.service import WebhookService
from tests.web.conftest import Site

# The README's screenshots are refreshed only when asked (KEYLEDGER_SCREENSHOTS=1), so that a test run does
# not rewrite tracked files; otherwise they go to a temporary directory (still taken, so still tested).
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHOTS = DOCS_SHOTS if os.environ.get("KEYLEDGER_SCREENSHOTS") else Path(tempfile.mkdtemp(prefix="kl-shots-"))
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def context_factory(browser, browser_site: Site):
    contexts, requests = [], []

    def make(**kw):
        ctx = browser.new_context(accept_downloads=True, viewport=kw.pop("viewport", LAPTOP), **kw)
        ctx.on("request", lambda r: requests.append(r.url))
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()
    local = [u for u in requests if not u.startswith((browser_site.base_url + "/", "data:", "blob:"))]
    assert requests and not local, f"requests left the local server: {local}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def chart_drawn(page) -> bool:
    return page.evaluate("""() => {
        const c = document.querySelector('canvas.usage-chart');
        if (!c || c.dataset.drawn !== '1') return false;
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) painted++;
        return painted > 1000;
    }""")


def sign_in_with_keyboard(page, site: Site) -> None:
    """Tab to the labelled token field, type, press Enter: the sign-in works from the keyboard alone."""
    page.goto(site.base_url + "/")
    assert page.url.endswith("/login")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"
    assert page.get_by_label("Admin token").get_attribute("id") == "token"
    page.keyboard.type(site.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(site.base_url + "/")


def test_operator_dashboard(context_factory, browser_site: Site, tmp_path):
    site = browser_site
    page = context_factory().new_page()
    page.goto(site.base_url + "/login")
    shot(page, "login")
    sign_in_with_keyboard(page, site)
    assert page.get_by_role("heading", name="Overview").is_visible()
    page.wait_for_function("document.querySelector('canvas.usage-chart')?.dataset.drawn === '1'")
    assert chart_drawn(page)
    assert page.locator("table").first.is_visible() or page.locator("details table").count()
    shot(page, "overview")
    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_function("document.querySelector('canvas.usage-chart')?.dataset.drawn === '1'")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways page scroll
    shot(page, "overview-phone")
    page.set_viewport_size(LAPTOP)

    page.get_by_role("link", name="Customers", exact=True).click()
    page.wait_for_url("**/customers")
    assert page.get_by_role("link", name="Beta Industries").is_visible()
    shot(page, "customers")
    page.get_by_role("link", name="Acme Corp").click()
    page.wait_for_url(f"**/customers/{site.acme.id}")
    assert chart_drawn(page)
    shot(page, "customer")

    # revoke a key (after the confirmation page) and see it gone at Deepgram (dgemu)
    key = site.acme_keys[1]
    page.get_by_role("link", name=f"Revoke key {key.id}").click()
    page.wait_for_url(f"**/keys/{key.id}/revoke")
    shot(page, "confirm-revoke")
    page.get_by_role("button", name="Yes, revoke").click()
    page.wait_for_url("**?done=revoked")
    row = page.locator(f'tr[data-key="{key.id}"]')
    assert "revoked" in row.inner_text()
    with site.dgemu.client() as dg:
        gone = dg.get(f"/v1/projects/{site.dgemu.project_id}/keys/{key.api_key_id}")
        assert gone.status_code == 404, gone.text
        still = dg.get(f"/v1/projects/{site.dgemu.project_id}/keys/{site.acme_keys[0].api_key_id}")
        assert still.status_code == 200

    # invoices: list, view, PDF download
    page.get_by_role("link", name="Invoices", exact=True).click()
    page.wait_for_url("**/invoices")
    shot(page, "invoices")
    page.get_by_role("link", name=site.acme_invoice["number"]).click()
    page.wait_for_url(f"**/invoices/{site.acme_invoice['id']}")
    shot(page, "invoice")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download PDF").click()
    path = tmp_path / "invoice.pdf"
    dl.value.save_as(path)
    assert path.read_bytes().startswith(b"%PDF")
    # a credit note, from its confirmation page (the keyboard's way through the form), listed on the invoice
    page.get_by_role("link", name="Credit…").click()
    page.wait_for_url(f"**/invoices/{site.acme_invoice['id']}/credit")
    page.get_by_label("Reason").fill("Outage on the 3rd")
    page.get_by_label("Amount before tax").fill("0.01")
    shot(page, "confirm-credit")
    page.get_by_role("button", name="Yes, credit").click()
    page.wait_for_url(f"**/invoices/{site.acme_invoice['id']}")
    note = page.locator("tr[data-credit-note]")
    assert note.count() == 1 and "Outage on the 3rd" in note.inner_text()
    assert note.get_attribute("data-credit-note").startswith("CN-")
    shot(page, "invoice-credited")

    # an endpoint and budget events, for the webhooks page
    rt = site.runtime
    endpoint = WebhookService(rt.engine, rt.cipher, rt.clock, actor="tests").add("https://hooks.example.test/kl")
    BudgetService(rt, actor="tests").set("beta", limit="0.10", action="notify")
    BudgetService(rt, actor="tests").evaluate("beta")
    for path_, name in (("/reconciliation", "reconciliation"), ("/sync-runs", "sync-runs"),
                        ("/webhooks", "webhooks")):
        page.goto(site.base_url + path_)
        shot(page, name)
    assert endpoint["id"] in page.content() and endpoint["secret"] not in page.content()
    for secret in site.secrets:
        assert secret not in page.content()


def test_portal_isolation_in_browser(context_factory, browser_site: Site):
    site = browser_site
    page = context_factory(viewport=PHONE).new_page()
    page.goto(f"{site.base_url}/portal/login?token={site.portal_token}")
    page.wait_for_url(site.base_url + "/portal")
    assert page.get_by_role("heading", name="Acme Corp").is_visible()
    page.wait_for_function("document.querySelector('canvas.usage-chart')?.dataset.drawn === '1'")
    assert chart_drawn(page)
    html = page.content()
    for foreign in ("Beta Industries", site.beta.id, site.beta_invoice["id"], site.beta_keys[0].api_key_id,
                    *site.secrets):
        assert foreign not in html
    shot(page, "portal-phone")
    resp = page.goto(f"{site.base_url}/portal/invoices/{site.beta_invoice['id']}")
    assert resp.status == 404 and "Not found" in page.content() and "Beta" not in page.content()
    resp = page.goto(f"{site.base_url}/portal/invoices/{site.acme_invoice['id']}")
    assert resp.status == 200 and site.acme_invoice["number"] in page.content()


def test_readable_without_javascript(context_factory, browser_site: Site):
    site = browser_site
    page = context_factory(java_script_enabled=False).new_page()
    page.goto(f"{site.base_url}/portal/login?token={site.beta_portal_token}")
    page.wait_for_url(site.base_url + "/portal")
    table = page.get_by_role("table").first
    assert table.is_visible() and "nova-3" in table.inner_text()
    shot(page, "portal-no-js")
