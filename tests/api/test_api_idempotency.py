"""Idempotency-Key under concurrency: identical requests at once create one Deepgram key, and every
caller gets the same answer (the secret included, since it is that request's response)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api.conftest import problem_ok
from tests.api.test_api_tokens_byo import _dump_database


def test_concurrent_identical_key_creations_create_one_deepgram_key(api):
    cust = api.customer("acme")

    def create(_i: int):
        with api.client(**{"Idempotency-Key": "create-acme-key-1"}) as c:
            r = c.post(f"/customers/{cust['id']}/keys", json={"comment": "prod"})
            return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    assert {status for status, _ in results} == {201}
    bodies = [body for _, body in results]
    assert all(b == bodies[0] for b in bodies) and bodies[0]["secret"]
    with api.dgemu.client() as c:
        keys = c.get(f"/v1/projects/{api.dgemu.project_id}/keys").json()["api_keys"]
    assert [k["api_key"]["api_key_id"] for k in keys if "customer:acme" in k["api_key"].get("tags", [])] == [
        bodies[0]["api_key_id"]
    ]
    # the stored first response carries the secret, so it is stored encrypted
    assert bodies[0]["secret"] not in _dump_database(api)
    with api.client() as c:
        assert len(c.get(f"/customers/{cust['id']}/keys").json()["data"]) == 1
        # a new key is a new request
        r = c.post(f"/customers/{cust['id']}/keys", json={"comment": "prod"},
                   headers={"Idempotency-Key": "create-acme-key-2"})
        assert r.status_code == 201 and r.json()["id"] != bodies[0]["id"]
        # the same key on another path is a different request
        problem_ok(c.post("/customers", json={"name": "x", "external_id": "x"},
                          headers={"Idempotency-Key": "create-acme-key-1"}), 422)
        problem_ok(c.post("/customers", json={"name": "x", "external_id": "y"},
                          headers={"Idempotency-Key": "x" * 300}), 422)


def test_a_refused_request_is_replayed_and_a_provider_failure_is_not_stored(api):
    with api.client(**{"Idempotency-Key": "k"}) as c:
        first = problem_ok(c.post("/customers/nobody/keys", json={}), 404)
        assert problem_ok(c.post("/customers/nobody/keys", json={}), 404) == first
    cust = api.customer("acme")
    with api.dgemu.client() as c:
        c.post("/_emulator/faults", json={"error_rate": 1.0}).raise_for_status()
    try:
        with api.client(**{"Idempotency-Key": "k2"}) as c:
            problem_ok(c.post(f"/customers/{cust['id']}/keys", json={}), 502)
    finally:
        with api.dgemu.client() as c:
            c.post("/_emulator/faults", json={"error_rate": 0}).raise_for_status()
    with api.client(**{"Idempotency-Key": "k2"}) as c:
        r = c.post(f"/customers/{cust['id']}/keys", json={})
        assert r.status_code == 201 and r.json()["secret"]
