"""The REST API end to end over real HTTP, against dgemu: customers, keys (secret once), sync runs,
usage (the same figures as the CLI), invoices (run, finalize, PDF, void), reconciliation, audit log,
pagination, problem+json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from keyledger.pricing.service import import_plan_text
from tests.api.conftest import problem_ok
from tests.usage_support import inject

PLAN = """
id: starter
name: Starter
currency: USD
mode: rate_card
tax_percent: "10"
effective_from: 2025-01-01
rates:
  "*::nova-3": {unit: minute, price: "0.0100"}
"""


def traffic(accessor: str, created: datetime, seconds: int) -> dict:
    return {"api_key_id": accessor, "created": created.isoformat().replace("+00:00", "Z"),
            "endpoint": "listen", "method": "sync", "model": "nova-3", "duration_seconds": seconds}


def cli_json(db_url: str, secret: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update({"KEYLEDGER_DATABASE_URL": db_url, "KEYLEDGER_SECRET_KEY": secret,
                "KEYLEDGER_CONFIG": "/nonexistent/keyledger.toml"})
    res = subprocess.run([sys.executable, "-m", "keyledger", *args, "--json"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_customers_keys_usage_invoices_reconciliation(api, db_url):
    rt = api.runtime
    import_plan_text(rt.engine, PLAN, name="starter.yaml", clock=rt.clock)
    now = datetime.now(UTC)
    # Keep the traffic inside this month (and inside the sync look-back).
    at = max(now - timedelta(hours=2), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    with api.client() as c:
        acme = api.customer("acme", plan="starter", email="ap@acme.test")
        beta = api.customer("beta", plan="starter")
        # keys: the secret once, never in lists
        r = c.post(f"/customers/{acme['id']}/keys", json={"comment": "prod"})
        assert r.status_code == 201, r.text
        key = r.json()
        assert key["secret"] and key["customer_id"] == acme["id"] and key["scopes"] == ["usage:write"]
        listed = c.get(f"/customers/{acme['id']}/keys").json()
        assert [k["id"] for k in listed["data"]] == [key["id"]]
        assert key["secret"] not in json.dumps(listed) and "secret" not in listed["data"][0]
        bkey = c.post("/customers/beta/keys").json()
        inject(api.dgemu, [traffic(key["api_key_id"], at, 60), traffic(key["api_key_id"], at, 30),
                           traffic(bkey["api_key_id"], at, 120), traffic("operator-own-key", at, 6)])
        # sync: trigger and status
        r = c.post("/sync-runs", json={"since": (now - timedelta(days=1)).date().isoformat()})
        assert r.status_code == 201, r.text
        [run] = r.json()["runs"]
        assert (run["status"], run["fetched"], run["inserted"], run["unattributed"]) == ("succeeded", 4, 4, 1)
        shown = c.get(f"/sync-runs/{run['run_id']}").json()
        assert shown["status"] == "succeeded" and shown["inserted"] == 4 and shown["connection"] == "main"
        assert [x["id"] for x in c.get("/sync-runs").json()["data"]] == [run["run_id"]]
        # usage: exactly what the CLI prints
        month_start = now.date().replace(day=1).isoformat()
        for by in ("line-item", "day", "key"):
            via_api = c.get(f"/customers/{acme['id']}/usage", params={"from": month_start, "by": by}).json()
            via_cli = cli_json(db_url, rt.settings.secret_key.get_secret_value(), "usage", "acme",
                               "--from", month_start, "--by", by)
            assert via_api == via_cli
        usage = c.get("/customers/acme/usage", params={"from": month_start}).json()
        assert usage["requests"] == 2 and usage["lines"][0]["quantity"] == "1.5000000000"
        # reconciliation: to the cent; the operator's own key is reported as unattributed
        period = now.strftime("%Y-%m")
        rec = c.get("/reconciliation", params={"period": period}).json()
        assert rec["matches_to_the_cent"] is True
        assert {x["customer_id"] for x in rec["customers"]} == {acme["id"], beta["id"]}
        assert rec["unattributed_usd"] != "0"
        # invoices
        r = c.post("/invoice-runs", json={"period": period})
        assert r.status_code == 201, r.text
        invs = c.get("/invoices", params={"period": period}).json()["data"]
        assert {i["customer_id"] for i in invs} == {acme["id"], beta["id"]}
        inv = next(i for i in invs if i["customer_id"] == acme["id"])
        assert inv["status"] == "draft" and inv["total"] == "0.02"  # 1.5 min * 0.01 + 10 % tax, rounded
        done = c.post(f"/invoices/{inv['id']}/finalize").json()
        assert done["status"] == "finalized" and done["number"].startswith("INV-")
        again = problem_ok(c.post(f"/invoices/{inv['id']}/finalize"), 409)
        assert "finalized" in again["detail"]
        pdf = c.get(f"/invoices/{done['number']}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.headers["content-type"] == "application/pdf"
        voided = c.post(f"/invoices/{inv['id']}/void", json={"reason": "test"}).json()
        assert voided["status"] == "void" and voided["number"] == done["number"]
        problem_ok(c.post(f"/invoices/{inv['id']}/mark-paid"), 409)
        # audit log: who did what
        audit = c.get("/audit-log", params={"limit": 500}).json()["data"]
        actions = {(e["action"], e["actor"].split(":")[0]) for e in audit}
        for action in ("customer.create", "key.create", "invoice.finalized", "invoice.voided"):
            assert (action, "admin-token") in actions, action
        assert key["secret"] not in json.dumps(audit)


def test_pagination_and_problems(api):
    with api.client() as c:
        ids = [api.customer(f"c{i:02d}")["id"] for i in range(7)]
        seen, cursor = [], None
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = c.get("/customers", params=params).json()
            seen += [x["id"] for x in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        problem_ok(c.get("/customers", params={"cursor": "not-a-cursor"}), 422)
        problem_ok(c.get("/customers", params={"limit": 0}), 422)
        body = problem_ok(c.post("/customers", json={"name": "x"}), 422)
        assert body["errors"][0]["field"] == "external_id"
        problem_ok(c.post("/customers", json={"name": "X", "external_id": "c00"}), 409)
        problem_ok(c.post("/customers", json={"name": "X", "external_id": "ok", "currency": "usd1"}), 422)
        problem_ok(c.post("/customers", json={"name": "X", "external_id": "k2", "timezone": "Mars/X"}), 422)
        problem_ok(c.post("/customers", json={"name": "X", "external_id": "ok3", "extra": 1}), 422)
        problem_ok(c.get("/customers/nope"), 404)
        problem_ok(c.get("/nowhere"), 404)
        problem_ok(c.delete("/customers"), 405)
        problem_ok(c.get("/customers/c00/usage", params={"from": "yesterday"}), 422)
        problem_ok(c.get("/reconciliation", params={"period": "2026-13"}), 422)
        changed = c.patch("/customers/c00", json={"email": "a@b.co", "plan": "gold"}).json()
        assert (changed["email"], changed["plan"]) == ("a@b.co", "gold")
        problem_ok(c.patch("/customers/c00", json={}), 422)
        doc = c.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.") and "/api/v1/customers/{customer_id}/usage" in doc["paths"]


def test_idempotency_key_replays_and_refuses_a_different_body(api):
    with api.client(**{"Idempotency-Key": "k-1"}) as c:
        first = c.post("/customers", json={"name": "Acme", "external_id": "acme"})
        second = c.post("/customers", json={"name": "Acme", "external_id": "acme"})
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
        other = problem_ok(c.post("/customers", json={"name": "Other", "external_id": "other"}), 422)
        assert "Idempotency-Key" in other["detail"]
    with api.client() as c:
        assert [x["external_id"] for x in c.get("/customers").json()["data"]] == ["acme"]
        # the same key from another caller is another key
        tok = api.portal_token(first.json()["id"])
    with api.client(tok, **{"Idempotency-Key": "k-1"}) as c:
        problem_ok(c.post("/customers", json={"name": "Acme", "external_id": "acme"}), 403)


def test_budgets_and_webhook_endpoints(api):
    cust = api.customer("acme")
    portal = api.portal_token(cust["id"])
    with api.client() as c:
        problem_ok(c.get(f"/customers/{cust['id']}/budget"), 404)
        r = c.put(f"/customers/{cust['id']}/budget", json={"limit": "250.00", "thresholds": [50, 90, 100],
                                                           "action": "revoke"})
        assert r.status_code == 200, r.text
        budget = r.json()
        # exact decimal strings, as `budgets list --json`
        assert Decimal(budget["limit"]) == 250 and Decimal(budget["spent"]) == 0
        assert (budget["thresholds"], budget["action"]) == ([50, 90, 100], "revoke")
        problem_ok(c.put(f"/customers/{cust['id']}/budget", json={"limit": "10", "action": "explode"}), 422)
        assert [b["customer_id"] for b in c.get("/budgets").json()["data"]] == [cust["id"]]
        with api.client(portal) as p:
            assert p.get(f"/customers/{cust['id']}/budget").json()["limit"] == budget["limit"]
            problem_ok(p.delete(f"/customers/{cust['id']}/budget"), 403)
        r = c.post("/webhook-endpoints",
                   json={"url": "https://hooks.example.com/kl", "events": ["invoice.finalized"]})
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["invoice.finalized"]
        listed = c.get("/webhook-endpoints").json()
        assert [h["id"] for h in listed["data"]] == [hook["id"]] and hook["secret"] not in json.dumps(listed)
        problem_ok(c.post("/webhook-endpoints", json={"url": "ftp://x"}), 422)
        assert c.delete(f"/webhook-endpoints/{hook['id']}").status_code == 204
        problem_ok(c.delete(f"/webhook-endpoints/{hook['id']}"), 404)
        assert c.delete(f"/customers/{cust['id']}/budget").status_code == 204
        audit = c.get("/audit-log", params={"limit": 500}).text
        assert hook["secret"] not in audit and "budget.create" in audit and "webhook.create" in audit
