"""Auth matrix: credentials × endpoints → status and Deepgram error shape (API_NOTES §1.2–1.5, §4).

Permissions per endpoint (§4.2): keys list needs ``keys:read``; members ``members:read``; billing
``billing:read``; requests ``usage:read``; ``/v1/listen`` ``usage:write``; ``/v1/auth/grant`` a member+ key.
A grant token (Bearer) works on the data plane only. Nothing may answer 5xx.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from . import spec
from .audio import tone

INVALID = {"INVALID_AUTH"}
MISSING = {"INVALID_AUTH", "UNAUTHORIZED"}
FORBIDDEN = {"FORBIDDEN", "INSUFFICIENT_PERMISSIONS"}

ENDPOINTS = ["project", "keys", "members", "usage", "billing", "requests", "listen", "grant"]


@dataclass
class Creds:
    headers: dict[str, dict[str, str]]


def _call(dg, endpoint: str, headers: dict[str, str]) -> httpx.Response:
    pid = dg.project_id
    with httpx.Client(base_url=dg.base_url, timeout=30, headers=headers) as c:
        if endpoint == "project":
            return c.get(f"/v1/projects/{pid}")
        if endpoint == "usage":
            return c.get(f"/v1/projects/{pid}/usage")
        if endpoint == "keys":
            return c.get(f"/v1/projects/{pid}/keys")
        if endpoint == "members":
            return c.get(f"/v1/projects/{pid}/members")
        if endpoint == "billing":
            return c.get(f"/v1/projects/{pid}/billing/breakdown")
        if endpoint == "requests":
            return c.get(f"/v1/projects/{pid}/requests")
        if endpoint == "listen":
            return c.post("/v1/listen", params={"model": "nova-3"}, content=tone("0.25").wav(),
                          headers={"Content-Type": "audio/wav"})
        if endpoint == "grant":
            return c.post("/v1/auth/grant", json={"ttl_seconds": 30})
    raise AssertionError(endpoint)


@pytest.fixture
def creds(dgemu) -> Creds:
    owner = dgemu.client()
    pid = dgemu.project_id
    member = spec.create_key(owner, pid, ["member"])
    usage = spec.create_key(owner, pid, ["usage:write"])
    admin = spec.create_key(owner, pid, ["admin"])
    keys_read = spec.create_key(owner, pid, ["keys:read"])
    billing_read = spec.create_key(owner, pid, ["billing:read"])
    deleted = spec.create_key(owner, pid, ["member"])
    assert owner.delete(f"/v1/projects/{pid}/keys/{deleted['api_key_id']}").status_code == 200
    expired = spec.create_key(owner, pid, ["member"], time_to_live_in_seconds=1)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired_date = owner.post(f"/v1/projects/{pid}/keys", json={
        "comment": "already expired", "scopes": ["member"], "expiration_date": past})
    grant = spec.check_ok(owner.post("/v1/auth/grant", json={"ttl_seconds": 60}))
    short = spec.check_ok(owner.post("/v1/auth/grant", json={"ttl_seconds": 1}))
    owner.close()
    time.sleep(1.5)  # the 1-second key and token are now expired
    headers = {
        "none": {},
        "bad": {"Authorization": "Token " + "0123456789abcdef" * 2 + "deadbeef"},
        "owner": {"Authorization": f"Token {dgemu.owner_key}"},
        "member": {"Authorization": f"Token {member['key']}"},
        "usage": {"Authorization": f"Token {usage['key']}"},
        "admin": {"Authorization": f"Token {admin['key']}"},
        "keys:read": {"Authorization": f"Token {keys_read['key']}"},
        "billing:read": {"Authorization": f"Token {billing_read['key']}"},
        "deleted": {"Authorization": f"Token {deleted['key']}"},
        "expired": {"Authorization": f"Token {expired['key']}"},
        "bearer": {"Authorization": f"Bearer {grant['access_token']}"},
        "expired-bearer": {"Authorization": f"Bearer {short['access_token']}"},
        "bearer-garbage": {"Authorization": "Bearer not.a.token"},
        "no-scheme": {"Authorization": dgemu.owner_key},
        "basic": {"Authorization": f"Basic {dgemu.owner_key}"},
    }
    # a key created with a past expiration_date is either refused (400) or dead on arrival
    if expired_date.status_code == 200:
        headers["expired-date"] = {"Authorization": f"Token {expired_date.json()['key']}"}
    else:
        spec.check_error(expired_date, 400)
        headers["expired-date"] = headers["expired"]
    return Creds(headers)


OK = 200
# credential → endpoint → expected (status, error codes)
MATRIX: dict[str, dict[str, tuple[int | set[int], set[str] | None]]] = {
    "none": {e: (401, MISSING) for e in ENDPOINTS},
    "bad": {e: (401, INVALID) for e in ENDPOINTS},
    "deleted": {e: (401, INVALID) for e in ENDPOINTS},
    "expired": {e: (401, INVALID) for e in ENDPOINTS},
    "expired-date": {e: (401, INVALID) for e in ENDPOINTS},
    "no-scheme": {e: (401, MISSING) for e in ENDPOINTS},
    "basic": {e: (401, MISSING) for e in ENDPOINTS},
    "owner": {e: (OK, None) for e in ENDPOINTS},
    "admin": {e: (OK, None) for e in ENDPOINTS},
    "member": {**{e: (OK, None) for e in ENDPOINTS}, "members": (403, FORBIDDEN),
               "billing": (403, FORBIDDEN)},
    "usage": {**{e: (403, FORBIDDEN) for e in ENDPOINTS}, "listen": (OK, None)},
    "keys:read": {**{e: (403, FORBIDDEN) for e in ENDPOINTS}, "keys": (OK, None)},
    "billing:read": {**{e: (403, FORBIDDEN) for e in ENDPOINTS}, "billing": (OK, None)},
    # docs/dgemu.md: a valid grant token on management / grant → 403 FORBIDDEN
    "bearer": {**{e: (403, {"FORBIDDEN"}) for e in ENDPOINTS}, "listen": (OK, None)},
    "expired-bearer": {e: (401, INVALID) for e in ENDPOINTS},
    "bearer-garbage": {e: (401, INVALID) for e in ENDPOINTS},
}


def test_matrix(dgemu, creds: Creds) -> None:
    """One test walks the whole matrix (one fixture setup, one 1.5 s expiry wait); failures are collected."""
    failures = []
    for cred, row in MATRIX.items():
        for endpoint, (status, codes) in row.items():
            resp = _call(dgemu, endpoint, creds.headers[cred])
            what = f"{cred:>14} × {endpoint:<8}"
            if resp.status_code >= 500:
                failures.append(f"{what}: {resp.status_code} {resp.text[:200]}")
                continue
            try:
                if status == OK:
                    spec.check_ok(resp)
                else:
                    spec.check_error(resp, status, codes)
            except AssertionError as exc:
                failures.append(f"{what}: {str(exc).splitlines()[0][:400]}")
    assert not failures, f"{len(failures)} auth-matrix cells wrong:\n" + "\n".join(failures)


def test_401_has_www_authenticate(dgemu) -> None:
    resp = _call(dgemu, "keys", {"Authorization": "Token nope"})
    spec.check_error(resp, 401, INVALID)
    assert resp.headers.get("www-authenticate", "").lower().startswith("token")


@pytest.mark.parametrize("scheme", ["Token", "token", "TOKEN", "tOkEn"])
def test_token_scheme_is_case_insensitive(dgemu, scheme: str) -> None:
    resp = _call(dgemu, "keys", {"Authorization": f"{scheme} {dgemu.owner_key}"})
    spec.check_ok(resp)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(dgemu, scheme: str) -> None:
    with dgemu.client() as owner:
        token = spec.check_ok(owner.post("/v1/auth/grant", json={}))["access_token"]
    resp = _call(dgemu, "listen", {"Authorization": f"{scheme} {token}"})
    spec.check_ok(resp)


def test_expired_key_listed_as_expired(dgemu) -> None:
    with dgemu.client() as owner:
        k = spec.create_key(owner, dgemu.project_id, ["member"], time_to_live_in_seconds=1)
        time.sleep(1.5)
        keys = f"/v1/projects/{dgemu.project_id}/keys"
        expired = spec.check_ok(owner.get(keys, params={"status": "expired"}))
        active = spec.check_ok(owner.get(keys, params={"status": "active"}))
    assert k["api_key_id"] in {i["api_key"]["api_key_id"] for i in expired["api_keys"]}
    assert k["api_key_id"] not in {i["api_key"]["api_key_id"] for i in active["api_keys"]}


def test_token_dies_with_its_key(dgemu) -> None:
    """A token minted by a key that is then deleted: UNKNOWN at Deepgram; docs/dgemu.md chose 401."""
    with dgemu.client() as owner:
        k = spec.create_key(owner, dgemu.project_id, ["member"])
    with dgemu.client(k["key"]) as c:
        token = spec.check_ok(c.post("/v1/auth/grant", json={"ttl_seconds": 60}))["access_token"]
    with dgemu.client() as owner:
        spec.check_ok(owner.delete(f"/v1/projects/{dgemu.project_id}/keys/{k['api_key_id']}"))
    spec.check_error(_call(dgemu, "listen", {"Authorization": f"Bearer {token}"}), 401, INVALID)


# --------------------------------------------------------------------------- WebSocket handshake


def _ws(dg, headers: dict | None = None, subprotocols: list[str] | None = None) -> int:
    """Open live listen, send a little audio, close; return the handshake status (101 when accepted)."""
    url = f"{dg.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    try:
        with ws_connect(url, additional_headers=headers or {}, subprotocols=subprotocols) as ws:
            ws.send(tone("0.25").pcm)
            ws.send('{"type":"CloseStream"}')
            last = None
            for msg in ws:
                last = msg
            assert last is not None and '"Metadata"' in last
            return 101
    except InvalidStatus as exc:
        assert exc.response.status_code < 500
        return exc.response.status_code


def test_ws_handshake_auth(dgemu) -> None:
    with dgemu.client() as owner:
        usage = spec.create_key(owner, dgemu.project_id, ["usage:write"])
        token = spec.check_ok(owner.post("/v1/auth/grant", json={}))["access_token"]
    assert _ws(dgemu) == 401
    assert _ws(dgemu, {"Authorization": "Token nope"}) == 401
    assert _ws(dgemu, {"Authorization": f"token {usage['key']}"}) == 101
    assert _ws(dgemu, {"Authorization": f"BEARER {token}"}) == 101
    # browsers: Sec-WebSocket-Protocol: token, <key> / bearer, <jwt>
    assert _ws(dgemu, subprotocols=["token", usage["key"]]) == 101
    assert _ws(dgemu, subprotocols=["bearer", token]) == 101
    assert _ws(dgemu, subprotocols=["token", "nope"]) == 401


def test_ws_handshake_errors_have_deepgram_bodies(dgemu) -> None:
    """Handshake failures are plain HTTP answers with an ErrorResponse body (docs/dgemu.md)."""
    with dgemu.client() as owner:
        keys_only = spec.create_key(owner, dgemu.project_id, ["keys:read"])
    cases = [
        ("model=nova-3&encoding=linear16&sample_rate=16000", {"Authorization": "Token nope"}, 401, INVALID),
        ("model=nova-3&encoding=linear16&sample_rate=16000", {"Authorization": f"Token {keys_only['key']}"},
         403, FORBIDDEN),
        ("model=nova-3&encoding=linear16", {"Authorization": f"Token {dgemu.owner_key}"}, 400, None),
    ]
    for query, headers, status, codes in cases:
        with pytest.raises(InvalidStatus) as err:
            with ws_connect(f"{dgemu.ws_url}/v1/listen?{query}", additional_headers=headers):
                pass
        r = err.value.response
        assert r.status_code == status, (query, r.status_code, r.body)
        body = r.body.decode()
        spec.assert_valid(spec.error_validator(), json.loads(body), f"WS handshake {status}")
        if codes:
            assert json.loads(body)["err_code"] in codes


def test_projects_are_isolated(dgemu) -> None:
    """A key of another project (a customer's own Deepgram account) sees nothing of this one: 404
    PROJECT_NOT_FOUND (API_NOTES §1.5, "not linked to the key"); its usage is recorded in its own project."""
    with dgemu.client() as owner:
        other = owner.post("/_emulator/projects", json={"name": "customer account"})
        assert other.status_code == 200, other.text
        other = other.json()
        main_key = spec.create_key(owner, dgemu.project_id, ["usage:write"])
    pid, opid = dgemu.project_id, other["project_id"]
    assert opid != pid
    with dgemu.client(other["owner_key"]) as oc:
        listed = spec.check_ok(oc.get("/v1/projects"))
        assert [p["project_id"] for p in listed["projects"]] == [opid]
        for path in ("", "/keys", "/requests", "/usage", "/billing/breakdown", "/balances",
                     f"/keys/{main_key['api_key_id']}"):
            spec.check_error(oc.get(f"/v1/projects/{pid}{path}"), 404, {"PROJECT_NOT_FOUND"})
        spec.check_error(oc.delete(f"/v1/projects/{pid}/keys/{main_key['api_key_id']}"), 404,
                         {"PROJECT_NOT_FOUND"})
        rid = spec.check_ok(_call(dgemu, "listen", {"Authorization": f"Token {other['owner_key']}"}))[
            "metadata"]["request_id"]
        assert spec.check_ok(oc.get(f"/v1/projects/{opid}/requests/{rid}"))["request"]["project_uuid"] == opid
    with dgemu.client() as owner:
        assert opid not in {p["project_id"] for p in spec.check_ok(owner.get("/v1/projects"))["projects"]}
        spec.check_error(owner.get(f"/v1/projects/{opid}/keys"), 404, {"PROJECT_NOT_FOUND"})
        spec.check_error(owner.get(f"/v1/projects/{pid}/requests/{rid}"), 404)
        assert spec.check_ok(owner.get(f"/v1/projects/{pid}/requests"))["requests"] == []
