"""Browser tokens and bring-your-own Deepgram account, over real HTTP against dgemu (two projects: the
operator's and the customer's own)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import text

from keyledger.db.metadata import metadata
from keyledger.pricing.service import import_plan_text
from tests.api.conftest import problem_ok
from tests.api.test_api_scenario import PLAN
from tests.usage_support import inject


def speak(dgemu, authorization: str, text_: str = "hello from the browser") -> httpx.Response:
    return httpx.post(f"{dgemu.base_url}/v1/speak", params={"model": "aura-2-thalia-en"},
                      json={"text": text_}, headers={"Authorization": authorization}, timeout=30)


def test_browser_token_usage_is_attributed_to_the_customer(api):
    cust = api.customer("acme")
    other = api.customer("beta")
    with api.client() as c:
        c.post(f"/customers/{other['id']}/keys").raise_for_status()
        r = c.post(f"/customers/{cust['id']}/tokens", json={"ttl_seconds": 120})
        assert r.status_code == 201, r.text
        grant = r.json()
        assert set(grant) == {"access_token", "expires_in"} and grant["expires_in"] == 120
        assert r.headers["cache-control"] == "no-store"
        # a second grant reuses the customer's grant key (one member key, not one per token)
        c.post(f"/customers/{cust['id']}/tokens").raise_for_status()
        keys = c.get(f"/customers/{cust['id']}/keys").json()["data"]
        assert [k["scopes"] for k in keys] == [["member"]]
        assert speak(api.dgemu, f"Bearer {grant['access_token']}").status_code == 200
        # Deepgram (dgemu) attributes the request to the customer's key; the sync brings it to the customer
        since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        [run] = c.post("/sync-runs", json={"since": since}).json()["runs"]
        assert (run["inserted"], run["unattributed"]) == (1, 0)
        usage = c.get(f"/customers/{cust['id']}/usage", params={"by": "key"}).json()
        assert usage["requests"] == 1 and usage["lines"][0]["api_key_id"] == keys[0]["api_key_id"]
        assert c.get(f"/customers/{other['id']}/usage").json()["requests"] == 0
        # limits and suspension
        problem_ok(c.post(f"/customers/{cust['id']}/tokens", json={"ttl_seconds": 3601}), 422)
        problem_ok(c.post(f"/customers/{cust['id']}/tokens", json={"ttl_seconds": 0}), 422)
        c.post(f"/customers/{cust['id']}/suspend").raise_for_status()
        body = problem_ok(c.post(f"/customers/{cust['id']}/tokens"), 403)
        assert "suspended" in body["detail"] and "reinstate" in body["detail"]
        # the suspension deleted the grant key at Deepgram: its tokens stop working
        assert speak(api.dgemu, f"Bearer {grant['access_token']}").status_code == 401
        problem_ok(c.get(f"/customers/{cust['id']}/credentials"), 403)
        c.post(f"/customers/{cust['id']}/reinstate").raise_for_status()
        fresh = c.post(f"/customers/{cust['id']}/tokens").json()
        assert speak(api.dgemu, f"Bearer {fresh['access_token']}").status_code == 200


def test_credentials_give_the_current_key_after_rotation_and_are_audited(api):
    cust = api.customer("acme")
    with api.client() as c:
        first = c.post(f"/customers/{cust['id']}/keys").json()
        creds = c.get(f"/customers/{cust['id']}/credentials").json()
        assert creds["api_key"] == first["secret"] and creds["project_id"] == api.dgemu.project_id
        rotated = c.post(f"/customers/{cust['id']}/keys/{first['id']}/rotate").json()
        creds2 = c.get("/customers/acme/credentials").json()
        assert creds2["api_key"] == rotated["secret"] != first["secret"]
        assert speak(api.dgemu, f"Token {creds2['api_key']}").status_code == 200
        assert speak(api.dgemu, f"Token {first['secret']}").status_code == 401
        audit = c.get("/audit-log", params={"limit": 500}).json()["data"]
        reads = [e for e in audit if e["action"] == "key.secret_read"]
        assert len(reads) == 2 and all(e["actor"].startswith("admin-token:") for e in reads)
        # no key secret in any list, show or audit response
        for url in (f"/customers/{cust['id']}/keys", f"/customers/{cust['id']}", "/audit-log?limit=500"):
            dumped = c.get(url).text
            assert first["secret"] not in dumped and rotated["secret"] not in dumped


def _dump_database(api) -> str:
    """Every row of every table as text (and the SQLite file's bytes, when it is a file)."""
    out = []
    with api.runtime.engine.connect() as db:
        for table in metadata.sorted_tables:
            for row in db.execute(text(f'SELECT * FROM "{table.name}"')):
                out.append(repr(tuple(row)))
    url = api.runtime.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        for suffix in ("", "-wal"):
            p = Path(url.database + suffix)
            if p.exists():
                out.append(p.read_bytes().decode("latin-1"))
    return "\n".join(out)


def test_byo_connect_sync_show_reconcile_disconnect(api, caplog):
    caplog.set_level(logging.DEBUG)
    dg = api.dgemu
    with dg.client() as c:
        own = c.post("/_emulator/projects", json={"name": "acme's own Deepgram"}).json()
    import_plan_text(api.runtime.engine, PLAN, name="starter.yaml", clock=api.runtime.clock)
    cust = api.customer("acme", plan="starter")
    managed = api.customer("beta")
    portal = api.portal_token(cust["id"])
    with api.client() as c:
        beta_key = c.post(f"/customers/{managed['id']}/keys").json()
    with api.client(portal) as p:
        problem_ok(p.put(f"/customers/{cust['id']}/byo-connection",
                         json={"project_id": own["project_id"], "api_key": "not-a-key-" + "0" * 30}), 422)
        problem_ok(p.put(f"/customers/{managed['id']}/byo-connection",
                         json={"project_id": own["project_id"], "api_key": own["owner_key"]}), 404)
        r = p.put(f"/customers/{cust['id']}/byo-connection",
                  json={"project_id": own["project_id"], "api_key": own["owner_key"]})
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["billing_mode"] == "byo" and shown["id"] == cust["id"]
        minted_id = shown["byo_connection"]["api_key_id"]
        problem_ok(p.put(f"/customers/{cust['id']}/byo-connection",
                         json={"project_id": own["project_id"], "api_key": own["owner_key"]}), 409)
    # the minted key lives in the customer's project, least privilege, tagged
    with dg.client(own["owner_key"]) as c:
        listed = c.get(f"/v1/projects/{own['project_id']}/keys").json()["api_keys"]
    minted = next(k["api_key"] for k in listed if k["api_key"]["api_key_id"] == minted_id)
    assert sorted(minted["scopes"]) == ["usage:read", "usage:write"]
    assert "keyledger" in minted.get("tags", []) and "customer:acme" in minted.get("tags", [])
    # usage made in the customer's own project (with their own keys) is synced and theirs
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    now = max(datetime.now(UTC) - timedelta(hours=1), month_start)  # this month, for the invoice
    rec = {"created": now.isoformat().replace("+00:00", "Z"), "endpoint": "listen", "method": "sync",
           "model": "nova-3", "duration_seconds": 120}
    inject(dg, [{**rec, "api_key_id": "their-own-key-1"}, {**rec, "api_key_id": "their-own-key-2"}],
           project_id=own["project_id"], key=own["owner_key"])
    inject(dg, [{**rec, "api_key_id": beta_key["api_key_id"]}, {**rec, "api_key_id": "operator-own"}])
    with api.client() as c:
        since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        runs = {r["connection"]: r for r in c.post("/sync-runs", json={"since": since}).json()["runs"]}
        byo_run = next(r for name, r in runs.items() if name.startswith("byo-"))
        assert (byo_run["inserted"], byo_run["unattributed"]) == (2, 0)
        assert (runs["main"]["inserted"], runs["main"]["unattributed"]) == (2, 1)
        usage = c.get(f"/customers/{cust['id']}/usage").json()
        assert usage["requests"] == 2 and usage["lines"][0]["quantity"] == "4.0000000000"
        # reconciliation of the operator's bill: BYO usage is neither attributed nor unattributed there
        rec_ = c.get("/reconciliation", params={"period": datetime.now(UTC).strftime("%Y-%m")}).json()
        assert rec_["connection"] == "main" and rec_["matches_to_the_cent"] is True
        assert {x["customer_id"] for x in rec_["customers"]} == {managed["id"]}
        # invoiced at zero: the customer pays Deepgram directly (plan without byo_pricing: plan)
        c.post("/invoice-runs", json={"period": datetime.now(UTC).strftime("%Y-%m"), "customer": "acme"})
        [inv] = c.get("/invoices", params={"customer_id": cust["id"]}).json()["data"]
        doc = c.get(f"/invoices/{inv['id']}").json()
        [line] = [x for x in doc["lines"] if x["kind"] == "byo"]
        assert line["amount"] == "0.00" and Decimal(line["quantity"]) == 4 and doc["total"] == "0.00"
        assert Decimal(line["provider_cost_usd"]) > 0
        byo_conn = next(x for x in c.get("/connections").json()["data"] if x["kind"] == "byo")
        assert byo_conn["customer_id"] == cust["id"] and "api_key" not in byo_conn
        r = c.get("/reconciliation", params={"period": "2026-01", "connection": byo_conn["name"]})
        assert "BYO" in problem_ok(r, 422)["detail"]
    # the submitted key: never stored, logged or answered
    assert own["owner_key"] not in _dump_database(api)
    assert all(own["owner_key"].encode() not in body for body in api.responses)
    assert own["owner_key"] not in caplog.text
    with api.runtime.engine.connect() as db:
        audit = json.dumps(db.execute(text("SELECT details FROM audit_log")).all(), default=str)
    assert own["owner_key"] not in audit
    # disconnect: the minted key is deleted (with a key the customer gives for that, used once)
    with api.client(portal) as p:
        r = p.request("DELETE", f"/customers/{cust['id']}/byo-connection",
                      json={"api_key": own["owner_key"]})
        assert r.status_code == 200, r.text
        assert r.json()["billing_mode"] == "managed" and r.json()["minted_key_deleted"] is True
        problem_ok(p.delete(f"/customers/{cust['id']}/byo-connection"), 409)
    with dg.client(own["owner_key"]) as c:
        left = c.get(f"/v1/projects/{own['project_id']}/keys").json()["api_keys"]
    ids = [k["api_key"]["api_key_id"] for k in left]
    assert minted_id not in ids
    with api.client() as c:
        conns = {x["id"]: x for x in c.get("/connections").json()["data"]}
        assert conns[byo_conn["id"]]["status"] == "disconnected"
        assert c.get(f"/customers/{cust['id']}/usage").json()["requests"] == 2  # history stays
    assert own["owner_key"] not in _dump_database(api)
