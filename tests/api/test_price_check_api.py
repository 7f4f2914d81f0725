"""``GET /api/v1/price-check`` (admin) and the ``price_check`` part of ``GET /api/v1/reconciliation``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.api.conftest import problem_ok
from tests.usage_support import inject


def test_price_check_over_the_api(api):
    cust = api.customer("acme")
    with api.client() as c:
        key = c.post(f"/customers/{cust['id']}/keys").json()
    at = max(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC).replace(day=1, hour=0, minute=0))
    period = f"{at:%Y-%m}"
    created = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    inject(api.dgemu, [{"api_key_id": key["api_key_id"], "created": created, "endpoint": "listen",
                        "method": "streaming", "model": "nova-3", "duration_seconds": 90}])
    with api.client() as c:
        since = (at - timedelta(days=1)).date().isoformat()
        assert c.post("/sync-runs", json={"since": since}).status_code in (200, 201)
        r = c.get("/price-check", params={"period": period, "customer": "acme"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["customer_id"] == cust["id"] and body["agrees"] is True
        (line,) = body["lines"]
        assert line["line_item"] == "streaming::nova-3" and line["records"] == 1
        assert Decimal(line["expected_usd"]) == Decimal("0.0048") * Decimal("1.5")
        assert isinstance(line["provider_usd"], str)
        rec = c.get("/reconciliation", params={"period": period}).json()
        assert rec["price_check"]["checked_records"] == 1 and rec["price_check"]["agrees"] is True
        problem_ok(c.get("/price-check", params={"period": "2026-13"}), 422)
        problem_ok(c.get("/price-check", params={"period": period, "customer": "nobody"}), 404)
    portal = api.portal_token(cust["id"])
    with api.client(portal) as p:
        problem_ok(p.get("/price-check", params={"period": period}), 403)
