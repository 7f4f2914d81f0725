"""A NUL character anywhere in a path or query is a clear 4xx problem on every route, on SQLite and
PostgreSQL (which cannot compare text with NUL and would otherwise fail the query)."""

from __future__ import annotations

import pytest

from tests.api.conftest import problem_ok

PATHS = (
    "/customers/acme%00",
    "/customers/%00/keys",
    "/invoices/inv_%00",
    "/keys/key%00x",
    "/customers/acme/usage%00",
    "/webhooks/%00",
)


@pytest.mark.parametrize("path", PATHS)
def test_nul_in_a_path_is_404(api, path):
    api.customer("acme")
    with api.client() as c:
        problem_ok(c.get(f"/api/v1{path}"), 404)
        problem_ok(c.delete(f"/api/v1{path}"), 404)


def test_nul_in_a_query_is_422_and_changes_nothing(api):
    api.customer("acme")
    with api.client() as c:
        before = c.get("/api/v1/customers").json()
        problem_ok(c.get("/api/v1/customers?cursor=a%00b"), 422)
        problem_ok(c.get("/api/v1/customers/acme/usage?from=2026-01-01%00"), 422)
        problem_ok(c.patch("/api/v1/customers/acme?x=%00", json={"name": "Changed"}), 422)
        assert c.get("/api/v1/customers").json() == before
