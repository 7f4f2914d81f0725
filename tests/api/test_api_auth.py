"""Authentication and scope: admin vs portal tokens, expiry and revocation (401), and the BOLA matrix —
every route that takes an id, called with a portal token of *another* customer, is 404 and shows none of
that customer's data; operator-only routes refuse every portal token alike (403, whatever the id)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import pytest

from keyledger.customers.tokens import TokenService
from keyledger.pricing.service import import_plan_text
from tests.api.conftest import problem_ok

PLAN = """
id: basic
name: Basic
currency: USD
mode: rate_card
effective_from: 2025-01-01
rates:
  "*::nova-3": {unit: minute, price: "0.0100"}
"""

# Minimal valid bodies, so a request reaches the scope check (an invalid body is 422 before it).
BODIES = {
    ("patch", "/api/v1/customers/{customer_id}"): {"name": "Renamed"},
    ("put", "/api/v1/customers/{customer_id}/byo-connection"): {"project_id": "p-1", "api_key": "k" * 40},
    ("post", "/api/v1/customers/{customer_id}/tokens"): {"ttl_seconds": 60},
    ("post", "/api/v1/customers/{customer_id}/keys"): {},
    ("put", "/api/v1/customers/{customer_id}/budget"): {"limit": "10.00"},
    ("post", "/api/v1/invoices/{invoice_id}/credit-notes"): {"reason": "x", "amount": "0.01"},
}
ADMIN_ONLY = "this endpoint needs an admin token; a portal token cannot use it"
CUSTOMER_PARAMS = {"customer_id", "key_id", "invoice_id"}


@pytest.fixture
def two_customers(api):
    import_plan_text(api.runtime.engine, PLAN, name="basic.yaml", clock=api.runtime.clock)
    a = api.customer("alpha", plan="basic", email="billing@alpha.test", name="Alpha Industries")
    b = api.customer("bravo", plan="basic", email="secret-ops@bravo.test", name="Bravo Confidential")
    with api.client() as c:
        keys = {x["id"]: c.post(f"/customers/{x['id']}/keys").json() for x in (a, b)}
        r = c.post("/invoice-runs", json={"period": datetime.now(UTC).strftime("%Y-%m")})
        assert r.status_code == 201, r.text
        invoices = {i["customer_id"]: i for i in c.get("/invoices").json()["data"]}
    return a, b, keys, invoices


def operations(api) -> list[tuple[str, str]]:
    with api.client() as c:
        doc = c.get("/openapi.json").json()
    return [(m, path) for path, ops in doc["paths"].items() for m in ops if "{" in path]


def test_bola_matrix_foreign_ids_are_404_and_leak_nothing(api, two_customers):
    a, b, keys, invoices = two_customers
    token_a = api.portal_token(a["id"])
    ids_b = {"customer_id": b["id"], "key_id": keys[b["id"]]["id"], "invoice_id": invoices[b["id"]]["id"]}
    ids_b_alt = {"customer_id": b["external_id"], "key_id": keys[b["id"]]["api_key_id"],
                 "invoice_id": invoices[b["id"]]["id"]}
    ops = operations(api)
    covered = 0
    with api.client(token_a) as c:
        for method, path in ops:
            params = set(re.findall(r"{(\w+)}", path))
            if not params <= CUSTOMER_PARAMS:
                continue
            for ids in (ids_b, ids_b_alt):
                url = path.removeprefix("/api/v1").format(**{p: ids[p] for p in params})
                body = BODIES.get((method, path))
                kw = {"json": body} if body is not None else {}
                r = c.request(method.upper(), url, **kw)
                problem_ok(r, 404)
                text = r.text
                for secret in ("Bravo Confidential", "secret-ops@bravo.test", keys[b["id"]]["secret"]):
                    assert secret not in text, (method, url, text)
            covered += 1
        # the same token on its own customer: reads work, admin-only actions are 403, not 404
        assert c.get(f"/customers/{a['id']}").json()["name"] == "Alpha Industries"
        assert c.get("/customers/alpha/usage").status_code == 200
        assert [k["id"] for k in c.get(f"/customers/{a['id']}/keys").json()["data"]] == [keys[a["id"]]["id"]]
        assert [i["customer_id"] for i in c.get("/invoices").json()["data"]] == [a["id"]]
        assert c.get(f"/invoices/{invoices[a['id']]['id']}").status_code == 200
        assert c.get(f"/invoices/{invoices[a['id']]['id']}/pdf").status_code == 200
        problem_ok(c.get("/invoices", params={"customer_id": b["id"]}), 404)
        assert [x["id"] for x in c.get("/customers").json()["data"]] == [a["id"]]
        for method, url in (("GET", f"/customers/{a['id']}/credentials"),
                            ("POST", f"/customers/{a['id']}/tokens"),
                            ("POST", f"/customers/{a['id']}/suspend"),
                            ("POST", f"/invoices/{invoices[a['id']]['id']}/finalize"),
                            ("DELETE", f"/customers/{a['id']}/keys/{keys[a['id']]['id']}")):
            problem_ok(c.request(method, url), 403)
        # operator resources: 403 for any portal token, whether or not the id exists
        for url in ("/connections", f"/connections/{api.connection_id}", "/connections/nope", "/plans",
                    "/plans/basic", "/plans/nope", "/sync-runs", "/sync-runs/nope", "/audit-log",
                    "/reconciliation?period=2026-01", "/budgets", "/webhook-endpoints"):
            assert problem_ok(c.get(url), 403)["detail"] == ADMIN_ONLY
        problem_ok(c.post("/portal-tokens", json={"customer_id": a["id"]}), 403)
        problem_ok(c.delete("/webhook-endpoints/whe_nope"), 403)
        problem_ok(c.post("/webhook-events/evt_nope/replay"), 403)
        problem_ok(c.post("/customers", json={"name": "x", "external_id": "x"}), 403)
    assert covered >= 15, covered
    # nothing changed for B
    with api.client() as c:
        assert c.get(f"/customers/{b['id']}").json() == b
        assert c.get(f"/customers/{b['id']}/keys").json()["data"][0]["status"] == "active"


def test_tokens_missing_unknown_revoked_or_expired_are_401(api, two_customers):
    a, _b, _keys, _inv = two_customers
    with api.client("") as c:
        r = c.get("/customers")
        problem_ok(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
    for bad in ("kla_" + "x" * 43, "klp_nope", "garbage", "Bearer"):
        with api.client(bad) as c:
            problem_ok(c.get("/customers"), 401)
    with api.client("x", Authorization="Basic dXNlcjpwYXNz") as c:
        problem_ok(c.get("/customers"), 401)
    # revoked admin token
    svc = TokenService(api.runtime, actor="tests")
    tok, secret = svc.create_admin("temp")
    with api.client(secret) as c:
        assert c.get("/customers").status_code == 200
        svc.revoke_admin(tok.id)
        problem_ok(c.get("/customers"), 401)
    # expired portal token
    short = api.portal_token(a["id"], ttl=1)
    with api.client(short) as c:
        assert c.get(f"/customers/{a['id']}").status_code == 200
        time.sleep(1.2)
        problem_ok(c.get(f"/customers/{a['id']}"), 401)
    # revoked portal token
    with api.client() as c:
        created = c.post("/portal-tokens", json={"customer_id": "alpha", "ttl_seconds": 600}).json()
        assert set(created) >= {"token", "expires_at", "id"}
        with api.client(created["token"]) as p:
            assert p.get(f"/customers/{a['id']}").status_code == 200
            assert c.delete(f"/portal-tokens/{created['id']}").status_code == 204
            problem_ok(p.get(f"/customers/{a['id']}"), 401)
        problem_ok(c.post("/portal-tokens", json={"customer_id": "nobody"}), 404)
        problem_ok(c.post("/portal-tokens", json={"customer_id": "alpha", "ttl_seconds": 0}), 422)


def test_tokens_are_stored_hashed_and_never_shown_again(api, two_customers):
    a, *_ = two_customers
    portal = api.portal_token(a["id"])
    with api.client() as c:
        listed = json.dumps([c.get(u).json() for u in ("/audit-log?limit=500", "/customers")])
    assert api.admin_token not in listed and portal not in listed
    from sqlalchemy import text

    with api.runtime.engine.connect() as db:
        rows = [dict(r._mapping) for t in ("admin_tokens", "portal_tokens", "audit_log")
                for r in db.execute(text(f"SELECT * FROM {t}"))]
    dump = json.dumps(rows, default=str)
    assert api.admin_token not in dump and portal not in dump
    assert api.admin_token[4:] not in dump and portal[4:] not in dump
