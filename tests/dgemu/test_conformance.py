"""Conformance: every response of every operation dgemu implements validates against Deepgram's official
OpenAPI schemas (and the live-listen WebSocket messages against the AsyncAPI payload schemas).

Table-driven: ``CASES`` lists HTTP calls (operation, path, query, body) with optional extra assertions;
``SPECIAL`` names the operations covered by dedicated tests below (binary bodies, WebSocket).
``test_every_claimed_operation_is_covered`` checks the table against ``CLAIMED``, the operations PRODUCT.md
§10 says dgemu implements, and ``test_unclaimed_get_operations_are_not_served`` makes sure dgemu serves
nothing else that this file does not check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect as ws_connect

try:  # tests/ is on sys.path (rootdir conftest) unless tests/ becomes a package
    from conftest import start_dgemu, stop_dgemu
except ImportError:  # pragma: no cover
    from tests.conftest import start_dgemu, stop_dgemu

from . import spec
from .audio import tone

P = "/v1/projects/{project_id}"

CLAIMED: set[tuple[str, str]] = {
    ("GET", "/v1/projects"),
    ("GET", P),
    ("GET", P + "/keys"),
    ("POST", P + "/keys"),
    ("GET", P + "/keys/{key_id}"),
    ("DELETE", P + "/keys/{key_id}"),
    ("GET", P + "/members"),
    ("GET", P + "/requests"),
    ("GET", P + "/requests/{request_id}"),
    ("GET", P + "/usage"),
    ("GET", P + "/usage/fields"),
    ("GET", P + "/usage/breakdown"),
    ("GET", P + "/billing/breakdown"),
    ("GET", P + "/billing/fields"),
    ("GET", P + "/balances"),
    ("GET", P + "/balances/{balance_id}"),
    ("POST", "/v1/auth/grant"),
    ("POST", "/v1/listen"),
    ("POST", "/v1/speak"),
    # served beyond PRODUCT §10's list (found by test_unclaimed_get_operations_are_not_served)
    ("PATCH", P),
    ("DELETE", P),
    ("GET", P + "/purchases"),
    ("GET", P + "/models"),
    ("GET", P + "/models/{model_id}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("POST", "/v1/read"),
}
CLAIMED_WS = {("/v1/listen", "ListenV1Results"), ("/v1/listen", "ListenV1Metadata")}


# --------------------------------------------------------------------------- seeded world


@dataclass
class World:
    dg: Any
    owner: httpx.Client
    pid: str
    key_id: str  # a usage:write key with tag "conf"
    key_secret: str
    other_key_id: str
    request_ids: list[str]
    day: dt.date  # the day of the injected records
    balance_id: str | None = None
    ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def world(dgemu) -> World:
    owner = dgemu.client()
    pid = dgemu.project_id
    k1 = spec.create_key(owner, pid, ["usage:write"], tags=["conf"])
    k2 = spec.create_key(owner, pid, ["usage:write"])
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    base = dt.datetime.combine(day, dt.time(10, 0), tzinfo=dt.UTC)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    a, b = k1["api_key_id"], k2["api_key_id"]
    minutes = dt.timedelta(minutes=1)
    records = [
        {"api_key_id": a, "created": _iso(base), "endpoint": "listen", "method": "sync",
         "model": "nova-3", "duration_seconds": 30, "channels": 1, "tags": ["conf"], "request_id": ids[0]},
        {"api_key_id": a, "created": _iso(base + minutes), "endpoint": "listen",
         "method": "streaming", "model": "nova-3", "duration_seconds": 61.5, "request_id": ids[1]},
        {"api_key_id": a, "created": _iso(base + 2 * minutes), "endpoint": "speak",
         "method": "sync", "model": "aura-2-thalia-en", "characters": 120, "request_id": ids[2]},
        {"api_key_id": b, "created": _iso(base + 3 * minutes), "endpoint": "listen",
         "method": "sync", "model": "nova-3", "duration_seconds": 12, "channels": 2, "request_id": ids[3]},
        {"api_key_id": b, "created": _iso(base + 60 * minutes), "endpoint": "listen",
         "method": "async", "model": "nova-2", "duration_seconds": 5, "request_id": ids[4]},
    ]
    spec.inject(owner, pid, records)
    w = World(dgemu, owner, pid, k1["api_key_id"], k1["key"], k2["api_key_id"], ids, day)
    balances = owner.get(f"/v1/projects/{pid}/balances")
    if balances.status_code == 200 and balances.json().get("balances"):
        w.balance_id = balances.json()["balances"][0]["balance_id"]
    yield w
    owner.close()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    method: str
    template: str
    params: dict | Callable[[World], dict] | None = None
    body: Any = None
    check: Callable[[World, Any], None] | None = None
    path_args: Callable[[World], dict] | None = None

    def path(self, w: World) -> str:
        args = {"project_id": w.pid, **(self.path_args(w) if self.path_args else {})}
        return self.template.format(**args)


def _requests(w: World, body: dict) -> list[dict]:
    return body["requests"]


def _all_ids(body: dict) -> set[str]:
    return {r["request_id"] for r in body["requests"]}


def chk_requests_all(w: World, b: dict) -> None:
    assert _all_ids(b) == set(w.request_ids)
    created = [r["created"] for r in b["requests"]]
    assert created == sorted(created, reverse=True), "requests must be newest first"
    for r in b["requests"]:
        assert r["project_uuid"] == w.pid
        assert "usd" in r["response"]["details"], r


def chk_requests_accessor(w: World, b: dict) -> None:
    assert _all_ids(b) == set(w.request_ids[:3])
    assert all(r["api_key_id"] == w.key_id for r in b["requests"])


def chk_requests_window(w: World, b: dict) -> None:
    # 10:00:00 .. 10:02:00 inclusive (docs/dgemu.md: end is inclusive)
    assert _all_ids(b) == set(w.request_ids[:3])


def chk_requests_endpoint(w: World, b: dict) -> None:
    assert _all_ids(b) == {w.request_ids[2]}


def chk_requests_method(w: World, b: dict) -> None:
    assert _all_ids(b) == {w.request_ids[1]}


def chk_requests_page(w: World, b: dict) -> None:
    assert b["limit"] == 2 and b["page"] == 1
    # newest first: ids[4], ids[3] | ids[2], ids[1] | ids[0]
    assert [r["request_id"] for r in b["requests"]] == [w.request_ids[2], w.request_ids[1]]


def chk_requests_page_past_end(w: World, b: dict) -> None:
    assert b["requests"] == []


def chk_requests_request_id(w: World, b: dict) -> None:
    assert _all_ids(b) == {w.request_ids[3]}


def chk_request_get(w: World, b: dict) -> None:
    r = b["request"]
    assert r["request_id"] == w.request_ids[3]
    assert r["api_key_id"] == w.other_key_id
    d = r["response"]["details"]
    assert d["channels"] == 2 and d["models"] == ["nova-3"]


def chk_keys_list(w: World, b: dict) -> None:
    order = [k["api_key"]["api_key_id"] for k in b["api_keys"]]
    assert {w.key_id, w.other_key_id} <= set(order)
    assert order.index(w.key_id) < order.index(w.other_key_id), "oldest first (docs/dgemu.md)"
    for k in b["api_keys"]:
        assert "key" not in k["api_key"], "the secret must appear only in the create response"
        assert k["member"]["member_id"] and k["member"]["email"]


def chk_key_get(w: World, b: dict) -> None:
    api_key = b["item"]["member"]["api_key"]
    assert api_key["api_key_id"] == w.key_id
    assert api_key["tags"] == ["conf"]
    assert "key" not in api_key


def chk_key_create(w: World, b: dict) -> None:
    assert b["key"] and b["api_key_id"] and b["comment"] == "made by conformance"
    assert "usage:write" in b["scopes"]
    assert b["tags"] == ["x"]


def chk_key_delete(w: World, b: dict) -> None:
    assert isinstance(b.get("message"), str)
    gone = w.owner.get(f"/v1/projects/{w.pid}/keys/{w.other_key_id}")
    spec.check_error(gone, 404)


def chk_projects(w: World, b: dict) -> None:
    assert w.pid in {p["project_id"] for p in b["projects"]}


def chk_project(w: World, b: dict) -> None:
    assert b["project_id"] == w.pid and isinstance(b["name"], str)


def chk_members(w: World, b: dict) -> None:
    assert b["members"], "the project has at least its owner"
    assert any("owner" in m.get("scopes", []) for m in b["members"])


def chk_usage(w: World, b: dict) -> None:
    assert b["start"] == str(w.day) and b["end"] == str(w.day)


def chk_breakdown_accessor(w: World, b: dict) -> None:
    rows = {r["grouping"]["accessor"]: r for r in b["results"]}
    assert set(rows) == {w.key_id, w.other_key_id}
    assert rows[w.key_id]["requests"] == 3 and rows[w.other_key_id]["requests"] == 2
    assert rows[w.key_id]["tts_characters"] == 120


def chk_breakdown_models(w: World, b: dict) -> None:
    models = sorted(m for r in b["results"] for m in r["grouping"]["models"])
    assert all(len(r["grouping"]["models"]) == 1 for r in b["results"]), b
    assert models == ["aura-2-thalia-en", "nova-2", "nova-3"], models  # names, not UUIDs (docs/dgemu.md)


def chk_billing_accessor_line_item(w: World, b: dict) -> None:
    items = {(r["grouping"]["accessor"], r["grouping"]["line_item"]) for r in b["results"]}
    assert (w.key_id, "streaming::nova-3") in items
    assert (w.key_id, "sync::aura-2") in items
    assert (w.other_key_id, "sync::nova-3") in items
    for r in b["results"]:
        assert r["grouping"]["deployment"] is None and r["grouping"]["tags"] is None


def chk_billing_fields(w: World, b: dict) -> None:
    assert {w.key_id, w.other_key_id} <= set(b["accessors"])
    assert {"sync::nova-3", "streaming::nova-3", "sync::aura-2"} <= set(b["line_items"])


def chk_usage_fields(w: World, b: dict) -> None:
    assert "conf" in b["tags"]
    assert {"sync", "streaming"} <= set(b["processing_methods"])


def chk_balance(w: World, b: dict) -> None:
    assert b["balance_id"] == w.balance_id
    assert b["units"].lower() == "usd"


def chk_balances(w: World, b: dict) -> None:
    assert b["balances"], "a project has a balance to show"


def chk_grant(w: World, b: dict) -> None:
    assert b["access_token"] and b["expires_in"] == 120


def chk_grant_default(w: World, b: dict) -> None:
    assert b["access_token"] and b["expires_in"] == 30, "the default TTL is 30 s (OAS GrantV1Request)"


def chk_project_update(w: World, b: dict) -> None:
    assert isinstance(b["message"], str)
    assert spec.check_ok(w.owner.get(f"/v1/projects/{w.pid}"))["name"] == "renamed by conformance"


def chk_project_delete(w: World, b: dict) -> None:
    assert isinstance(b["message"], str)
    spec.check_error(w.owner.get(f"/v1/projects/{w.pid}"), 404, {"PROJECT_NOT_FOUND"})
    with w.dg.client(w.key_secret) as c:  # its keys are dead on the data plane
        dead = c.post("/v1/listen", params={"model": "nova-3"}, content=tone("0.5").wav(),
                      headers={"Content-Type": "audio/wav"})
    spec.check_error(dead, 401, {"INVALID_AUTH"})


def chk_purchases(w: World, b: dict) -> None:
    assert b["orders"] and all(o["units"].lower() == "usd" for o in b["orders"])


def chk_models(w: World, b: dict) -> None:
    assert "nova-3" in {m["canonical_name"] for m in b["stt"]}
    assert any(m["canonical_name"].startswith("aura-2") for m in b["tts"])


def _model_id(w: World) -> str:
    return spec.check_ok(w.owner.get("/v1/models"))["stt"][0]["uuid"]


def chk_model(w: World, b: dict) -> None:
    assert b["uuid"] == _model_id(w)


def chk_read(w: World, b: dict) -> None:
    md = b["metadata"]["metadata"]
    assert md["summary_info"]["input_tokens"] > 0
    rec = spec.check_ok(w.owner.get(f"/v1/projects/{w.pid}/requests/{md['request_id']}"))["request"]
    assert rec["path"] == "/v1/read"


def _window(w: World) -> dict:
    return {"start": f"{w.day}T10:00:00Z", "end": f"{w.day}T10:02:00.000000Z"}


def _day(w: World) -> dict:
    return {"start": str(w.day), "end": str(w.day)}


def _grouped(grouping: str) -> Callable[[World], dict]:
    return lambda w: {**_day(w), "grouping": grouping}


CASES: list[Case] = [
    Case("projects-list", "GET", "/v1/projects", check=chk_projects),
    Case("project-get", "GET", P, check=chk_project),
    Case("keys-list", "GET", P + "/keys", check=chk_keys_list),
    Case("keys-list-active", "GET", P + "/keys", {"status": "active"}, check=chk_keys_list),
    Case("keys-create", "POST", P + "/keys",
         body={"comment": "made by conformance", "scopes": ["usage:write"], "tags": ["x"]},
         check=chk_key_create),
    Case("keys-create-ttl", "POST", P + "/keys",
         body={"comment": "made by conformance", "scopes": ["usage:write"], "tags": ["x"],
               "time_to_live_in_seconds": 3600}, check=chk_key_create),
    Case("key-get", "GET", P + "/keys/{key_id}", path_args=lambda w: {"key_id": w.key_id}, check=chk_key_get),
    Case("key-delete", "DELETE", P + "/keys/{key_id}", path_args=lambda w: {"key_id": w.other_key_id},
         check=chk_key_delete),
    Case("members-list", "GET", P + "/members", check=chk_members),
    Case("requests-list", "GET", P + "/requests", {"limit": 100}, check=chk_requests_all),
    Case("requests-list-float-limit", "GET", P + "/requests", {"limit": "100.0", "page": "0.0"},
         check=chk_requests_all),
    Case("requests-accessor", "GET", P + "/requests", lambda w: {"accessor": w.key_id, "limit": 100},
         check=chk_requests_accessor),
    Case("requests-window", "GET", P + "/requests", lambda w: {**_window(w), "limit": 100},
         check=chk_requests_window),
    Case("requests-endpoint", "GET", P + "/requests", {"endpoint": "speak"}, check=chk_requests_endpoint),
    Case("requests-method", "GET", P + "/requests", {"method": "streaming", "status": "succeeded",
                                                     "deployment": "hosted"}, check=chk_requests_method),
    Case("requests-request-id", "GET", P + "/requests", lambda w: {"request_id": w.request_ids[3]},
         check=chk_requests_request_id),
    Case("requests-page", "GET", P + "/requests", {"limit": 2, "page": 1}, check=chk_requests_page),
    Case("requests-page-past-end", "GET", P + "/requests", {"limit": 2, "page": 7},
         check=chk_requests_page_past_end),
    Case("request-get", "GET", P + "/requests/{request_id}",
         path_args=lambda w: {"request_id": w.request_ids[3]}, check=chk_request_get),
    Case("usage", "GET", P + "/usage", _day, check=chk_usage),
    Case("usage-filtered", "GET", P + "/usage",
         lambda w: {**_day(w), "accessor": w.key_id, "endpoint": "listen", "method": "sync", "tag": "conf",
                    "multichannel": "true"}),
    Case("usage-fields", "GET", P + "/usage/fields", _day, check=chk_usage_fields),
    Case("usage-breakdown", "GET", P + "/usage/breakdown", _day),
    *[
        Case(f"usage-breakdown-{g}", "GET", P + "/usage/breakdown", _grouped(g),
             check={"accessor": chk_breakdown_accessor, "models": chk_breakdown_models}.get(g))
        for g in ("accessor", "endpoint", "feature_set", "models", "method", "tags", "deployment")
    ],
    Case("billing-breakdown", "GET", P + "/billing/breakdown", _day),
    Case("billing-breakdown-grouped", "GET", P + "/billing/breakdown",
         lambda w: {**_day(w), "grouping": ["accessor", "line_item"]}, check=chk_billing_accessor_line_item),
    Case("billing-breakdown-grouped-json", "GET", P + "/billing/breakdown",
         lambda w: {**_day(w), "grouping": '["accessor","line_item"]'}, check=chk_billing_accessor_line_item),
    Case("billing-breakdown-filtered", "GET", P + "/billing/breakdown",
         lambda w: {**_day(w), "accessor": w.key_id, "line_item": "sync::aura-2", "deployment": "hosted",
                    "grouping": ["tags", "deployment"]}),
    Case("billing-fields", "GET", P + "/billing/fields", _day, check=chk_billing_fields),
    Case("balances-list", "GET", P + "/balances", check=chk_balances),
    Case("balance-get", "GET", P + "/balances/{balance_id}", path_args=lambda w: {"balance_id": w.balance_id},
         check=chk_balance),
    Case("auth-grant", "POST", "/v1/auth/grant", body={"ttl_seconds": 120}, check=chk_grant),
    Case("project-update", "PATCH", P, body={"name": "renamed by conformance"}, check=chk_project_update),
    Case("project-delete", "DELETE", P, check=chk_project_delete),
    Case("purchases", "GET", P + "/purchases", {"limit": 5}, check=chk_purchases),
    Case("models-list", "GET", "/v1/models", {"include_outdated": "true"}, check=chk_models),
    Case("model-get", "GET", "/v1/models/{model_id}", path_args=lambda w: {"model_id": _model_id(w)},
         check=chk_model),
    Case("project-models-list", "GET", P + "/models", check=chk_models),
    Case("project-model-get", "GET", P + "/models/{model_id}", path_args=lambda w: {"model_id": _model_id(w)},
         check=chk_model),
    Case("read", "POST", "/v1/read", {"summarize": "true", "sentiment": "true"},
         body={"text": "The emulator reads this text. It is short."}, check=chk_read),
    Case("auth-grant-default", "POST", "/v1/auth/grant", body={}, check=chk_grant_default),
]

SPECIAL: set[tuple[str, str]] = {("POST", "/v1/listen"), ("POST", "/v1/speak")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_response_conforms(world: World, case: Case) -> None:
    params = case.params(world) if callable(case.params) else case.params
    resp = world.owner.request(case.method, case.path(world), params=params,
                               json=case.body if case.body is not None else None)
    assert spec.template_of(resp.request.url.path) == case.template
    body = spec.check_ok(resp, case.template)
    spec.assert_complete(case.method, case.template, body)
    if case.check:
        case.check(world, body)


def test_every_claimed_operation_is_covered() -> None:
    assert spec_ops_claimed_exist()
    covered = {(c.method, c.template) for c in CASES} | SPECIAL
    assert covered == CLAIMED, f"not covered: {CLAIMED - covered}; unexpected: {covered - CLAIMED}"


def spec_ops_claimed_exist() -> bool:
    missing = CLAIMED - spec.spec_operations()
    assert not missing, f"claimed operations absent from openapi.yml: {missing}"
    for channel, message in CLAIMED_WS:
        spec.message_validator(channel, message)
    return True


def test_unclaimed_get_operations_are_not_served(dgemu) -> None:
    """dgemu must not answer 2xx on a documented GET this file does not check (else: cover it here)."""
    fake = str(uuid.uuid4())
    served = []
    with dgemu.client() as c:
        for method, template in sorted(spec.spec_operations() - CLAIMED):
            if method != "GET" or template.startswith("/v1/agent/"):
                continue
            path = template.replace("{project_id}", dgemu.project_id)
            path = re.sub(r"\{[^}]+\}", fake, path)
            resp = c.get(path)
            assert resp.status_code < 500, f"GET {path} → {resp.status_code}: {resp.text[:300]}"
            if resp.status_code < 300:
                served.append(template)
    assert not served, f"dgemu serves operations the conformance test does not cover: {served}"


def test_unclaimed_websocket_channels_are_not_served(dgemu) -> None:
    """Of the AsyncAPI channels only live ``/v1/listen`` is claimed (and checked above)."""
    channels = set(spec.asyncapi()["channels"])
    assert {c for c, _ in CLAIMED_WS} <= channels
    served = []
    for channel in sorted(channels - {c for c, _ in CLAIMED_WS}):
        try:
            auth = {"Authorization": f"Token {dgemu.owner_key}"}
            with ws_connect(f"{dgemu.ws_url}{channel}?model=x", additional_headers=auth, open_timeout=10):
                served.append(channel)
        except InvalidStatus as exc:
            assert exc.response.status_code < 500, (channel, exc.response.status_code)
    assert not served, f"dgemu serves WebSocket channels the conformance test does not cover: {served}"


# --------------------------------------------------------------------------- errors: ErrorResponse


@dataclass
class ErrCase:
    id: str
    method: str
    path: Callable[[World], str]
    status: int | set[int]
    codes: set[str] | None = None
    key: str = "owner"  # owner | none | member | usage
    params: dict | None = None
    content: bytes | None = None
    json: Any = None
    headers: dict | None = None
    message: str | None = None  # documented message (prefix)


def _pp(suffix: str) -> Callable[[World], str]:
    return lambda w: f"/v1/projects/{w.pid}{suffix}"


AUTH_CODES = {"INVALID_AUTH"}
MISSING_AUTH_CODES = {"INVALID_AUTH", "UNAUTHORIZED"}
BAD_QUERY = {"INVALID_QUERY_PARAMETER"}
FORBIDDEN_CODES = {"FORBIDDEN", "INSUFFICIENT_PERMISSIONS"}

ERR_CASES = [
    ErrCase("no-auth", "GET", lambda w: "/v1/projects", 401, MISSING_AUTH_CODES, key="none"),
    ErrCase("bad-key", "GET", _pp("/keys"), 401, AUTH_CODES, key="bad", message="Invalid credentials."),
    ErrCase("usage-key-on-keys", "GET", _pp("/keys"), 403, FORBIDDEN_CODES, key="usage"),
    ErrCase("member-on-billing", "GET", _pp("/billing/breakdown"), 403, FORBIDDEN_CODES,
            key="member"),
    ErrCase("member-on-balances", "GET", _pp("/balances"), 403, FORBIDDEN_CODES,
            key="member"),
    ErrCase("usage-key-grant", "POST", lambda w: "/v1/auth/grant", 403, {"FORBIDDEN"}, key="usage",
            json={}, message="Insufficient permissions."),
    ErrCase("project-missing", "GET", lambda w: f"/v1/projects/{uuid.uuid4()}", 404, {"PROJECT_NOT_FOUND"},
            message="Project not found."),
    ErrCase("project-not-uuid", "GET", lambda w: "/v1/projects/not-a-uuid/keys", 404,
            message="UUID parsing failed"),
    ErrCase("key-missing", "GET", _pp("/keys/{uuid.uuid4()}"), 404),
    ErrCase("key-delete-missing", "DELETE", _pp("/keys/{uuid.uuid4()}"), 404),
    ErrCase("request-missing", "GET", _pp("/requests/{uuid.uuid4()}"), 404),
    ErrCase("balance-missing", "GET", _pp("/balances/{uuid.uuid4()}"), 404),
    ErrCase("limit-zero", "GET", _pp("/requests"), 400, BAD_QUERY,
            params={"limit": 0}),
    ErrCase("limit-too-big", "GET", _pp("/requests"), 400, BAD_QUERY,
            params={"limit": 1001}),
    ErrCase("page-negative", "GET", _pp("/requests"), 400, BAD_QUERY,
            params={"page": -1}),
    ErrCase("bad-start", "GET", _pp("/requests"), 400, BAD_QUERY,
            params={"start": "yesterday"}),
    ErrCase("create-key-bad-json", "POST", _pp("/keys"), 400,
            content=b"{not json", headers={"Content-Type": "application/json"}),
    ErrCase("create-key-no-scopes", "POST", _pp("/keys"), 400, json={"comment": "x"}),
    ErrCase("listen-garbage", "POST", lambda w: "/v1/listen", 400, params={"model": "nova-3"},
            content=b"this is not audio at all", headers={"Content-Type": "audio/wav"}),
    ErrCase("speak-no-text", "POST", lambda w: "/v1/speak", 400, params={"model": "aura-2-thalia-en"},
            json={}),
]


@pytest.mark.parametrize("case", ERR_CASES, ids=[c.id for c in ERR_CASES])
def test_error_conforms(world: World, case: ErrCase) -> None:
    headers = dict(case.headers or {})
    if case.key == "owner":
        headers["Authorization"] = f"Token {world.dg.owner_key}"
    elif case.key == "bad":
        headers["Authorization"] = "Token " + "f" * 40
    elif case.key == "usage":
        headers["Authorization"] = f"Token {world.key_secret}"
    elif case.key == "member":
        member = spec.create_key(world.owner, world.pid, ["member"])
        headers["Authorization"] = f"Token {member['key']}"
    with httpx.Client(base_url=world.dg.base_url, timeout=30) as c:
        resp = c.request(case.method, case.path(world), params=case.params, content=case.content,
                         json=case.json, headers=headers)
    spec.check_error(resp, case.status, case.codes, case.message)


# --------------------------------------------------------------------------- data plane (binary bodies)


@pytest.mark.parametrize("channels,multichannel", [(1, False), (2, True)])
def test_listen_rest_conforms(world: World, channels: int, multichannel: bool) -> None:
    audio = tone("2.5", channels=channels)
    with world.dg.client(world.key_secret) as c:
        resp = c.post("/v1/listen", params={"model": "nova-3", "multichannel": str(multichannel).lower(),
                                            "tag": "conf-listen"},
                      content=audio.wav(), headers={"Content-Type": "audio/wav"})
    body = spec.check_ok(resp, "/v1/listen")
    spec.assert_complete("POST", "/v1/listen", body)
    md = body["metadata"]
    assert md["duration"] == float(audio.duration)
    assert md["channels"] == channels
    assert md["tags"] == ["conf-listen"]
    assert len(body["results"]["channels"]) == (channels if multichannel else 1)
    assert md["sha256"] == hashlib.sha256(audio.wav()).hexdigest()
    # the transcription's request id is the request log's id
    got = world.owner.get(f"/v1/projects/{world.pid}/requests/{md['request_id']}")
    rec = spec.check_ok(got)["request"]
    assert rec["path"] == "/v1/listen" and rec["api_key_id"] == world.key_id


def test_listen_callback_is_accepted_async(world: World) -> None:
    """With ``callback`` the 200 is ``ListenV1AcceptedResponse`` and the request is logged as ``async``."""
    audio = tone("1")
    with world.dg.client(world.key_secret) as c:
        resp = c.post("/v1/listen", params={"model": "nova-3", "callback": "http://127.0.0.1:9/callback"},
                      content=audio.wav(), headers={"Content-Type": "audio/wav"})
    body = spec.check_ok(resp, "/v1/listen")
    assert set(body) == {"request_id"}, body
    rec = spec.check_ok(world.owner.get(f"/v1/projects/{world.pid}/requests/{body['request_id']}"))["request"]
    assert rec["response"]["details"]["method"] == "async" and rec["api_key_id"] == world.key_id


def test_listen_octet_stream_conforms(world: World) -> None:
    """The SDK's transcribe_file sends Content-Type application/octet-stream."""
    audio = tone("1")
    with world.dg.client(world.key_secret) as c:
        resp = c.post("/v1/listen", params={"model": "nova-3"}, content=audio.wav(),
                      headers={"Content-Type": "application/octet-stream"})
    body = spec.check_ok(resp, "/v1/listen")
    assert body["metadata"]["duration"] == 1.0


def test_speak_rest_returns_audio(world: World) -> None:
    """OAS models the 200 of /v1/speak as an empty JSON object, but it is audio: check headers and bytes."""
    text = "Hello from the conformance test."
    with world.dg.client(world.key_secret) as c:
        resp = c.post("/v1/speak", params={"model": "aura-2-thalia-en", "encoding": "linear16",
                                           "container": "wav", "sample_rate": 16000},
                      json={"text": text})
        default = c.post("/v1/speak", json={"text": text})
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["content-type"].startswith("audio/"), resp.headers
    assert spec._is_uuid(resp.headers["dg-request-id"])
    assert int(resp.headers["dg-char-count"]) == len(text)
    assert resp.headers.get("dg-model-name")
    assert resp.headers.get("dg-project-id") == world.pid
    with wave.open(io.BytesIO(resp.content)) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnframes() > 0
    assert default.status_code == 200, default.text[:500]
    assert default.headers["content-type"].startswith("audio/") and default.content
    got = world.owner.get(f"/v1/projects/{world.pid}/requests/{resp.headers['dg-request-id']}")
    rec = spec.check_ok(got)["request"]
    assert rec["path"] == "/v1/speak" and rec["api_key_id"] == world.key_id


# --------------------------------------------------------------------------- live listen (AsyncAPI)


def test_live_listen_messages_conform(world: World) -> None:
    audio = tone("1.5")
    results_v = spec.message_validator("/v1/listen", "ListenV1Results")
    metadata_v = spec.message_validator("/v1/listen", "ListenV1Metadata")
    query = "model=nova-3&encoding=linear16&sample_rate=16000&channels=1&interim_results=false"
    url = f"{world.dg.ws_url}/v1/listen?{query}"
    messages: list[dict] = []
    with ws_connect(url, additional_headers={"Authorization": f"Token {world.key_secret}"}) as ws:
        for chunk in audio.chunks(0.25):
            ws.send(chunk)
        ws.send(json.dumps({"type": "KeepAlive"}))
        ws.send(json.dumps({"type": "Finalize"}))
        ws.send(json.dumps({"type": "CloseStream"}))
        for raw in ws:  # until the server closes
            assert isinstance(raw, str), "live listen sends JSON text frames"
            messages.append(json.loads(raw))
    kinds = [m.get("type") for m in messages]
    assert "Results" in kinds, kinds
    assert kinds[-1] == "Metadata" and kinds.count("Metadata") == 1, kinds
    for m in messages:
        if m["type"] == "Results":
            spec.assert_valid(results_v, m, "ListenV1Results")
        elif m["type"] == "Metadata":
            spec.assert_valid(metadata_v, m, "ListenV1Metadata")
        else:
            pytest.fail(f"unexpected message {m}")
    assert any(m.get("from_finalize") for m in messages if m["type"] == "Results"), "Finalize → from_finalize"
    md = messages[-1]
    assert md["duration"] == float(audio.duration) and md["channels"] == 1
    rec = spec.check_ok(world.owner.get(f"/v1/projects/{world.pid}/requests/{md['request_id']}"))["request"]
    assert rec["api_key_id"] == world.key_id
    assert rec["response"]["details"]["method"] == "streaming"


@pytest.mark.parametrize("channels", [1, 2])
def test_live_listen_multichannel_results(world: World, channels: int) -> None:
    """multichannel=true: one Results per channel, ``channel_index == [i, n]``; Metadata hashes the audio."""
    audio = tone("1", channels=channels)
    results_v = spec.message_validator("/v1/listen", "ListenV1Results")
    query = f"model=nova-3&encoding=linear16&sample_rate=16000&channels={channels}&multichannel=true"
    with ws_connect(f"{world.dg.ws_url}/v1/listen?{query}",
                    additional_headers={"Authorization": f"Token {world.key_secret}"}) as ws:
        for chunk in audio.chunks(0.25):
            ws.send(chunk)
        ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) for m in ws]
    results = [m for m in messages if m["type"] == "Results"]
    for m in results:
        spec.assert_valid(results_v, m, "ListenV1Results")
    assert {tuple(m["channel_index"]) for m in results} == {(i, channels) for i in range(channels)}
    for i in range(channels):
        finals = [m for m in results if m["channel_index"][0] == i and m["is_final"]]
        assert sum(Decimal(str(m["duration"])) for m in finals) == audio.duration
    md = messages[-1]
    assert md["type"] == "Metadata" and md["channels"] == channels
    assert md["sha256"] == hashlib.sha256(audio.pcm).hexdigest()


def test_live_listen_keepalive_and_idle_timeout() -> None:
    """KeepAlive keeps an idle stream open; without audio or KeepAlive the server closes 1011 NET-0001
    (API_NOTES §3.4); the idle time is not billed. Runs its own dgemu with a 2 s idle timeout."""
    server = start_dgemu(["--ws-idle-timeout", "2"])
    try:
        with server.client() as owner:
            key = spec.create_key(owner, server.project_id, ["usage:write"])
            audio = tone("0.5")
            url = f"{server.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
            with ws_connect(url, additional_headers={"Authorization": f"Token {key['key']}"}) as ws:
                ws.send(audio.pcm)
                for _ in range(8):  # 3.2 s idle, kept alive
                    time.sleep(0.4)
                    ws.send(json.dumps({"type": "KeepAlive"}))
                t0 = time.monotonic()
                with pytest.raises(ConnectionClosedError):
                    for _ in ws:
                        pass
                waited = time.monotonic() - t0
                assert ws.close_code == 1011 and ws.close_reason.startswith("NET-0001"), (ws.close_code,
                                                                                         ws.close_reason)
            assert 1.0 < waited < 6, waited
            page = spec.check_ok(owner.get(f"/v1/projects/{server.project_id}/requests",
                                           params={"method": "streaming"}))
            assert len(page["requests"]) == 1
            details = page["requests"][0]["response"]["details"]
            assert details["duration"] == 0.5 and details["total_audio"] == 0.5
            assert page["requests"][0]["api_key_id"] == key["api_key_id"]
    finally:
        stop_dgemu(server)


def _faults(w: World, settings: dict) -> None:
    resp = w.owner.post("/_emulator/faults", json=settings)
    assert resp.status_code == 200, resp.text


def test_fault_responses_conform(world: World) -> None:
    """Injected faults (PRODUCT §10) answer like Deepgram: 429 TOO_MANY_REQUESTS with Retry-After, 5xx with
    an ErrorResponse body."""
    try:
        _faults(world, {"rate_limit_rate": 1.0, "retry_after_seconds": 7})
        resp = world.owner.get(f"/v1/projects/{world.pid}/keys")
        spec.check_error(resp, 429, {"TOO_MANY_REQUESTS"})
        assert resp.headers["retry-after"] == "7"
        with world.dg.client(world.key_secret) as c:
            listen = c.post("/v1/listen", params={"model": "nova-3"}, content=tone("0.5").wav(),
                            headers={"Content-Type": "audio/wav"})
        spec.check_error(listen, 429, {"TOO_MANY_REQUESTS"})
        _faults(world, {"rate_limit_rate": 0.0, "error_rate": 1.0})
        resp = world.owner.get(f"/v1/projects/{world.pid}/keys")
        assert resp.status_code >= 500
        spec.check_error(resp, {500, 502, 503, 504})
    finally:
        _faults(world, {"rate_limit_rate": 0.0, "error_rate": 0.0, "latency_ms": 0, "late_record_seconds": 0})


def test_project_id_is_parsed_as_a_uuid(world: World) -> None:
    """Deepgram parses the project id as a UUID (a malformed one answers 404 "UUID parsing failed", API_NOTES
    §1.5), so the upper-case spelling of the same UUID names the same project."""
    resp = world.owner.get(f"/v1/projects/{world.pid.upper()}")
    assert spec.check_ok(resp, P)["project_id"] == world.pid
    keys = spec.check_ok(world.owner.get(f"/v1/projects/{world.pid.upper()}/keys"), P + "/keys")
    assert world.key_id in {k["api_key"]["api_key_id"] for k in keys["api_keys"]}
