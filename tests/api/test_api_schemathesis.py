"""Schemathesis against the live API's OpenAPI document: generated requests (valid and invalid) to every
operation, with an admin token and with a portal token; no answer may be a 5xx (except 502 "Provider
error": Deepgram itself unreachable, e.g. at a base_url the generator made up), and every error is
application/problem+json. Bounded (a fixed number of examples per operation, derandomized) so it stays
well under a minute."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from keyledger.pricing.service import import_plan_text
from tests.api.test_api_auth import PLAN

EXAMPLES = int(os.environ.get("KEYLEDGER_SCHEMATHESIS_EXAMPLES", "15"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_generated_request_gets_a_5xx(api):
    import_plan_text(api.runtime.engine, PLAN, name="basic.yaml", clock=api.runtime.clock)
    cust = api.customer("alpha", plan="basic")
    portal = api.portal_token(cust["id"], ttl=3600)
    schema = schemathesis.openapi.from_url(f"{api.base_url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 30

    def fuzz(op, token: str) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            response = case.call(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30)
            if response.status_code == 502 and response.json().get("title") == "Provider error":
                return  # Deepgram (here: an unreachable base_url the generator chose) failed upstream
            if response.status_code >= 500:
                failures.append(f"{op.label}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                ctype = response.headers.get("content-type", [""])
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                if not ctype.startswith("application/problem+json"):
                    failures.append(f"{op.label}: {response.status_code} without problem+json ({ctype})")

        check()

    for op in operations:
        for token in (api.admin_token, portal):
            fuzz(op, token)
    assert not failures, "\n".join(sorted(set(failures))[:30])
