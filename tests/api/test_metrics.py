"""``GET /metrics`` over a live API and a real database (SQLite and PostgreSQL) with usage synced from dgemu:
every database gauge equals what the database says, the lag follows the injected clock, HTTP counters use
route templates (never ids), and the endpoint answers only the metrics token or an admin token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import func, select

from keyledger.budgets.service import BudgetService
from keyledger.core.clock import FrozenClock
from keyledger.db.tables_budgets import budget_periods
from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_notifications import webhook_deliveries, webhook_events
from keyledger.db.tables_usage import sync_state, usage_records
from tests.api.conftest import problem_ok
from tests.api.test_api_scenario import traffic
from tests.conftest import free_port
from tests.usage_support import inject

METRICS_TOKEN = "metrics-scrape-token-for-tests"


def scrape(api, token: str | None = None) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items -> value}, parsed with prometheus_client's own parser."""
    auth = {"Authorization": f"Bearer {token or api.admin_token}"}
    resp = httpx.get(api.base_url + "/metrics", headers=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by(samples: dict[tuple, float], label: str) -> dict[str, float]:
    return {dict(k)[label]: v for k, v in samples.items()}


def test_database_gauges_equal_the_database_after_a_real_sync(api):
    rt = api.runtime
    rt.settings.webhook_allow_private_networks = True  # the receiver is on loopback (never reached here)
    now = datetime.now(UTC)
    at = max(now - timedelta(hours=2), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    with api.client() as c:
        hook = c.post("/webhook-endpoints", json={"url": f"http://127.0.0.1:{free_port()}/hook"})
        assert hook.status_code == 201, hook.text
        acme = api.customer("acme")
        key = c.post(f"/customers/{acme['id']}/keys").json()  # key.created: one pending delivery
        inject(api.dgemu, [traffic(key["api_key_id"], at, 60), traffic(key["api_key_id"], at, 30),
                           traffic("operator-own-key", at, 6)])
        since = (now - timedelta(days=1)).date().isoformat()
        [run] = c.post("/sync-runs", json={"since": since}).json()["runs"]
        assert (run["status"], run["inserted"], run["unattributed"]) == ("succeeded", 3, 1)
        r = c.put(f"/customers/{acme['id']}/budget", json={"limit": "0.0001", "thresholds": [50, 100]})
        assert r.status_code == 200, r.text
    BudgetService(rt).evaluate_all()  # both thresholds fire: two budget alerts, two more deliveries

    m = scrape(api)
    assert m["keyledger_database_up"] == {(): 1.0}
    with rt.engine.connect() as db:
        ledger = db.execute(select(func.count()).select_from(usage_records)).scalar_one()
        unattributed = db.execute(select(func.count())
                                  .where(usage_records.c.customer_id.is_(None))).scalar_one()
        deliveries = dict(db.execute(select(webhook_deliveries.c.state, func.count())
                                     .group_by(webhook_deliveries.c.state)).all())
        alerts = dict(db.execute(select(webhook_events.c.type, func.count())
                                 .where(webhook_events.c.type.like("budget.%"))
                                 .group_by(webhook_events.c.type)).all())
        periods = dict(db.execute(select(budget_periods.c.state, func.count())
                                  .group_by(budget_periods.c.state)).all())
        statuses = dict(db.execute(select(invoices.c.status, func.count()).group_by(invoices.c.status)).all())
        watermark = db.execute(select(sync_state.c.watermark)
                               .where(sync_state.c.connection_id == api.connection_id)).scalar_one()
    labels = (("connection", "main"), ("connection_id", api.connection_id))
    assert ledger == 3 and m["keyledger_usage_records_ingested_total"] == {labels: ledger}
    assert unattributed == 1 and m["keyledger_usage_records_unattributed"] == {labels: unattributed}
    assert deliveries == {"pending": 3} and by(m["keyledger_webhook_deliveries"], "state") == deliveries
    assert m["keyledger_webhook_deliveries_due"] == {(): 3.0}
    assert m["keyledger_webhook_oldest_pending_age_seconds"][()] >= 0
    assert alerts == {"budget.threshold_reached": 2}
    assert by(m["keyledger_budget_alerts_total"], "type") == {**alerts, "budget.projected_to_exceed": 0}
    assert by(m["keyledger_budget_periods"], "state") == periods == {"exceeded": 1}
    assert by(m.get("keyledger_invoices", {}), "status") == statuses
    assert labels in m["keyledger_sync_last_success_timestamp_seconds"]

    # The lag is now - watermark at scrape time: it follows the injected clock.
    rt.clock = FrozenClock(watermark + timedelta(seconds=100))
    assert scrape(api)["keyledger_sync_lag_seconds"] == {labels: 100.0}
    rt.clock.advance(timedelta(minutes=5))
    later = scrape(api)
    assert later["keyledger_sync_lag_seconds"] == {labels: 400.0}
    # The oldest pending delivery ages with the same clock.
    assert later["keyledger_webhook_oldest_pending_age_seconds"][()] >= 400


def test_http_counters_use_route_templates_and_never_ids(api):
    acme = api.customer("acme")
    with api.client() as c:
        for _ in range(2):
            assert c.get(f"/customers/{acme['id']}").status_code == 200
        problem_ok(c.get("/customers/cus_nonexistent"), 404)
    text = httpx.get(api.base_url + "/metrics", headers={"Authorization": f"Bearer {api.admin_token}"}).text
    assert acme["id"] not in text and "acme" not in text and "cus_nonexistent" not in text
    m = scrape(api)
    requests = {(dict(k)["route"], dict(k)["status"]): v
                for k, v in m["keyledger_http_requests_total"].items() if dict(k)["method"] == "GET"}
    template = "/api/v1/customers/{customer_id}"
    assert requests[(template, "200")] == 2 and requests[(template, "404")] == 1
    assert any(name == "keyledger_http_request_duration_seconds_bucket" for name in m)


def test_metrics_need_the_metrics_token_or_an_admin_token(api):
    url = api.base_url + "/metrics"
    problem_ok(httpx.get(url), 401)
    problem_ok(httpx.get(url, headers={"Authorization": "Bearer not-a-token"}), 401)
    acme = api.customer("acme")
    portal = api.portal_token(acme["id"])
    problem_ok(httpx.get(url, headers={"Authorization": f"Bearer {portal}"}), 403)
    problem_ok(httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}), 401)  # not set yet
    api.runtime.settings.metrics_token = SecretStr(METRICS_TOKEN)
    assert "keyledger_database_up" in scrape(api, METRICS_TOKEN)
    assert "keyledger_database_up" in scrape(api)  # an admin token still works


def test_every_response_carries_a_request_id(api):
    with api.client() as c:
        given = c.get("/health", headers={"X-Request-ID": "lb-1234.abc"})
        assert given.headers["X-Request-ID"] == "lb-1234.abc"
        fresh = c.get("/health", headers={"X-Request-ID": "not sane <script>"})
        assert fresh.headers["X-Request-ID"] != "lb-1234.abc" and len(fresh.headers["X-Request-ID"]) == 32
        assert c.get("/customers/nope").headers["X-Request-ID"]
