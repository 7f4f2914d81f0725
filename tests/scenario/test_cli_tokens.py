"""``keyledger admin-tokens``, ``keyledger tokens grant`` and ``keyledger serve`` as real subprocesses,
against a real dgemu."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from tests.conftest import free_port


def ok(res) -> dict | list:
    assert res.returncode == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout)


def fails(res, *words: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_admin_tokens_and_serve(run_cli, kl_env, dgemu):
    created = ok(run_cli("admin-tokens", "create", "ci", "--json"))
    assert set(created) == {"id", "name", "token"} and created["token"].startswith("kla_")
    other = ok(run_cli("admin-tokens", "create", "ops", "--json"))
    listed = ok(run_cli("admin-tokens", "list", "--json"))
    assert [t["name"] for t in listed] == ["ci", "ops"] and all(t["status"] == "active" for t in listed)
    human = run_cli("admin-tokens", "list")
    assert created["token"] not in json.dumps(listed) + human.stdout + human.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "keyledger", "serve", "--port", str(port)], env=kl_env.env,
                            cwd=kl_env.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "keyledger serve did not start"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {created['token']}"}
        assert httpx.get(f"{base}/customers", headers=auth).json() == {"data": [], "next_cursor": None}
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "keyledger"
        revoked = ok(run_cli("admin-tokens", "revoke", created["id"], "--json"))
        assert revoked["status"] == "revoked"
        r = httpx.get(f"{base}/customers", headers=auth)
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
        ok2 = httpx.get(f"{base}/customers", headers={"Authorization": f"Bearer {other['token']}"})
        assert ok2.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    for secret in (created["token"], other["token"]):
        assert secret not in out + err
    fails(run_cli("admin-tokens", "revoke", "nope"), "not found")


def test_tokens_grant(run_cli, kl_env, dgemu):
    env = kl_env.with_(DEEPGRAM_API_KEY=dgemu.owner_key)
    ok(run_cli("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url,
               "--json", env=env))  # fmt: skip
    ok(run_cli("customers", "add", "Acme", "--external-id", "acme", "--json", env=env))
    grant = ok(run_cli("tokens", "grant", "acme", "--ttl", "90", "--json", env=env))
    assert set(grant) == {"access_token", "expires_in"} and grant["expires_in"] == 90
    r = httpx.post(f"{dgemu.base_url}/v1/speak", json={"text": "hi"},
                   headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert r.status_code == 200
    keys = ok(run_cli("keys", "list", "--customer", "acme", "--json", env=env))
    assert [k["scopes"] for k in keys] == [["member"]]  # the grant key, attributed to acme
    with httpx.Client(base_url=dgemu.base_url, headers={"Authorization": f"Token {dgemu.owner_key}"}) as c:
        recs = c.get(f"/v1/projects/{dgemu.project_id}/requests").json()["requests"]
    assert recs[0]["api_key_id"] == keys[0]["api_key_id"]
    fails(run_cli("tokens", "grant", "acme", "--ttl", "4000", env=env), "between 1 and 3600")
    fails(run_cli("tokens", "grant", "nobody", env=env), "not found")
    ok(run_cli("customers", "suspend", "acme", "--json", env=env))
    fails(run_cli("tokens", "grant", "acme", env=env), "suspended", "reinstate")
