"""``POST /invoices/{id}/credit-notes`` over real HTTP, on both databases: an amount (tax at the invoice's
rate added), whole lines, or everything left; the credit notes show on the invoice; an Idempotency-Key
replays instead of crediting twice; bad input is a problem+json that changes nothing; portal tokens
cannot credit (their own invoice: 403, another customer's: 404)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from keyledger.pricing.service import import_plan_text
from tests.api.conftest import problem_ok
from tests.api.test_api_scenario import PLAN, traffic
from tests.usage_support import inject


@pytest.fixture
def invoiced(api):
    """acme's finalized invoice of this month: 100 minutes at 0.01 + 10 % tax = 1.10 USD (one line);
    beta's draft."""
    rt = api.runtime
    import_plan_text(rt.engine, PLAN, name="starter.yaml", clock=rt.clock)
    now = datetime.now(UTC)
    at = max(now - timedelta(hours=2), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    acme = api.customer("acme", plan="starter")
    beta = api.customer("beta", plan="starter")
    period = now.strftime("%Y-%m")
    with api.client() as c:
        acme_key = c.post(f"/customers/{acme['id']}/keys").json()
        beta_key = c.post(f"/customers/{beta['id']}/keys").json()
        inject(api.dgemu, [traffic(acme_key["api_key_id"], at, 6000),
                           traffic(beta_key["api_key_id"], at, 60)])
        since = (now - timedelta(days=1)).date().isoformat()
        assert c.post("/sync-runs", json={"since": since}).status_code == 201
        assert c.post("/invoice-runs", json={"period": period}).status_code == 201
        invs = {i["customer_id"]: i for i in c.get("/invoices", params={"period": period}).json()["data"]}
        done = c.post(f"/invoices/{invs[acme['id']]['id']}/finalize").json()
    assert (done["status"], done["total"], len(done["lines"])) == ("finalized", "1.10", 1)
    return acme, beta, done, invs[beta["id"]]


def credit(c, invoice_ref: str, body: dict):
    return c.post(f"/invoices/{invoice_ref}/credit-notes", json=body)


def notes_of(c, invoice_id: str) -> list[dict]:
    return c.get(f"/invoices/{invoice_id}").json()["credit_notes"]


def test_amount_then_the_rest_and_the_notes_show_on_the_invoice(api, invoiced):
    _acme, _beta, inv, _draft = invoiced
    with api.client() as c:
        r = c.post(f"/invoices/{inv['number']}/credit-notes", json={"reason": "outage", "amount": "0.50"})
        assert r.status_code == 201, r.text
        note = r.json()
        assert note["number"].startswith("CN-") and note["invoice_id"] == inv["id"]
        assert (note["subtotal"], note["tax"], note["total"]) == ("0.50", "0.05", "0.55")
        assert (note["invoice_number"], note["reason"], note["currency"]) == (inv["number"], "outage", "USD")
        rest = c.post(f"/invoices/{inv['id']}/credit-notes", json={"reason": "goodwill"})
        assert rest.status_code == 201, rest.text
        assert (rest.json()["subtotal"], rest.json()["tax"], rest.json()["total"]) == ("0.50", "0.05", "0.55")
        assert [n["number"] for n in notes_of(c, inv["id"])] == [note["number"], rest.json()["number"]]
        left = problem_ok(credit(c, inv["id"], {"reason": "x", "amount": "0.01"}), 409)
        assert "exceeds what is left" in left["detail"]
        audit = c.get("/audit-log", params={"limit": 500}).json()["data"]
        assert [e["subject"] for e in audit if e["action"] == "credit_note.issued"].count(note["id"]) == 1


def test_whole_lines_once(api, invoiced):
    _acme, _beta, inv, _draft = invoiced
    with api.client() as c:
        r = c.post(f"/invoices/{inv['id']}/credit-notes", json={"reason": "wrong rate", "lines": [1]})
        assert r.status_code == 201, r.text
        assert r.json()["total"] == "1.10" and [x["position"] for x in r.json()["lines"]] == [1]
        again = problem_ok(c.post(f"/invoices/{inv['id']}/credit-notes", json={"reason": "x", "lines": [1]}),
                           409)
        assert "already credited" in again["detail"]


def test_an_idempotency_key_credits_once(api, invoiced):
    _acme, _beta, inv, _draft = invoiced
    body = {"reason": "outage", "amount": "0.20"}
    with api.client(**{"Idempotency-Key": "credit-1"}) as c:
        first = c.post(f"/invoices/{inv['id']}/credit-notes", json=body)
        second = c.post(f"/invoices/{inv['id']}/credit-notes", json=body)
        assert first.status_code == second.status_code == 201, first.text
        assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
        other = problem_ok(credit(c, inv["id"], {**body, "amount": "0.30"}), 422)
        assert "Idempotency-Key" in other["detail"]
    with api.client() as c:
        assert [n["id"] for n in notes_of(c, inv["id"])] == [first.json()["id"]]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"reason": "x", "amount": "0.50", "lines": [1]}, 422, "not both"),
        ({"reason": "x", "amount": "0.123"}, 422, "decimal places"),
        ({"reason": "x", "amount": "-1"}, 422, "amount"),
        ({"reason": "x", "amount": "0"}, 422, "positive"),
        ({"reason": "x", "amount": "5.00"}, 409, "exceeds"),
        ({"reason": "x", "lines": [2]}, 422, "no line 2"),
        ({"reason": "x", "lines": [0]}, 422, "lines"),
        ({"reason": "x", "lines": []}, 422, "lines"),
        ({"reason": ""}, 422, "reason"),
        ({"amount": "0.10"}, 422, "reason"),
        ({"reason": "x", "amout": "0.10"}, 422, "amout"),
    ],
)
def test_bad_input_is_a_problem_and_credits_nothing(api, invoiced, body, status, says):
    _acme, _beta, inv, _draft = invoiced
    with api.client() as c:
        got = problem_ok(c.post(f"/invoices/{inv['id']}/credit-notes", json=body), status)
        assert says in got["detail"], got
        assert notes_of(c, inv["id"]) == []


def test_drafts_unknown_invoices_and_portal_tokens_are_refused(api, invoiced):
    acme, beta, inv, draft = invoiced
    body = {"reason": "x", "amount": "0.10"}
    with api.client() as c:
        assert "draft" in problem_ok(credit(c, draft["id"], body), 409)["detail"]
        problem_ok(c.post("/invoices/inv_nope/credit-notes", json=body), 404)
    with api.client(api.portal_token(acme["id"])) as c:
        problem_ok(c.post(f"/invoices/{inv['id']}/credit-notes", json=body), 403)
    with api.client(api.portal_token(beta["id"])) as c:
        problem_ok(c.post(f"/invoices/{inv['id']}/credit-notes", json=body), 404)
    with api.client() as c:
        assert notes_of(c, inv["id"]) == [] and notes_of(c, draft["id"]) == []


def test_a_credit_note_as_json_and_pdf_for_admin_and_its_own_customer_only(api, invoiced):
    acme, beta, inv, _draft = invoiced
    with api.client() as c:
        note = credit(c, inv["id"], {"reason": "outage", "amount": "0.50"}).json()
        for ref in (note["id"], note["number"]):
            shown = c.get(f"/credit-notes/{ref}").json()
            assert shown == shown | note and shown["customer"]["id"] == acme["id"]
            assert (shown["invoice_number"], shown["tax_percent"]) == (inv["number"], "10")
        pdf = c.get(f"/credit-notes/{note['number']}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
        assert pdf.headers["content-type"] == "application/pdf" and note["number"] in pdf.headers[
            "content-disposition"]
        problem_ok(c.get("/credit-notes/CN-2000-000001"), 404)
    with api.client(api.portal_token(acme["id"])) as c:
        assert c.get(f"/credit-notes/{note['id']}").json()["number"] == note["number"]
        assert c.get(f"/credit-notes/{note['id']}/pdf").content.startswith(b"%PDF-")
    with api.client(api.portal_token(beta["id"])) as c:  # another customer's: exactly like a missing one
        for path in (f"/credit-notes/{note['id']}", f"/credit-notes/{note['number']}/pdf"):
            body = problem_ok(c.get(path), 404)
            assert "outage" not in json.dumps(body) and acme["name"] not in json.dumps(body)
