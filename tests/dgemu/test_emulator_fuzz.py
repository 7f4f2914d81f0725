"""No bad request may ever make dgemu answer 500: garbage paths, params, headers and bodies."""

from __future__ import annotations

import json
import random

import httpx

GARBAGE_VALUES = [
    "",
    " ",
    "-1",
    "0",
    "1e309",
    "nan",
    "NaN",
    "inf",
    "-0",
    "10.5",
    "9" * 400,
    "null",
    "[]",
    "{}",
    '["accessor"',
    "[1,2]",
    '["x"]',
    "true",
    "false",
    "2026-02-30",
    "2026-01-01T99:00:00Z",
    "2026-01-01T00:00:00+99:00",
    "0000-00-00",
    "\u00e9\u00e8",
    "%00",
    "a,b,c",
    "'; drop table",
    "\x7f",
    "2026-01-01T00:00:00.1234567891234Z",
    "+00:00",
    "1e999999999",
    "-1e999999999",
    "0e999999999",
    "Z",
]
PARAMS = [
    "start",
    "end",
    "limit",
    "page",
    "accessor",
    "request_id",
    "deployment",
    "endpoint",
    "method",
    "status",
    "grouping",
    "tag",
    "model",
    "line_item",
    "multichannel",
    "encoding",
    "sample_rate",
    "channels",
    "ttl_seconds",
    "callback",
    "punctuate",
    "container",
    "bit_rate",
    "language",
]
BODIES = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"1",
    b'"x"',
    b'{"text": 5}',
    b'{"text": ""}',
    b'{"ttl_seconds": -1}',
    b'{"ttl_seconds": 1e400}',
    b'{"ttl_seconds": true}',
    b'{"ttl_seconds": 1e999999999}',
    b'{"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": 1e999999999}',
    b'{"comment": "x", "scopes": "owner"}',
    b'{"comment": "x", "scopes": ["nope"]}',
    b'{"comment": "x", "scopes": [1]}',
    b'{"comment": "x", "scopes": ["member"], "expiration_date": "never"}',
    b'{"comment": "x", "scopes": ["member"], "expiration_date": "2001-01-01T00:00:00Z"}',
    b'{"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": -5}',
    b'{"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": 1.5}',
    b'{"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": 9e99}',
    b'{"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": 60, "expiration_date": "2030-01-01"}',
    b'{"requests": [{"created": 5}]}',
    b'{"requests": [null]}',
    b'{"requests": [{"duration_seconds": 1e999}]}',
    b'{"name": ""}',
    b'{"error_rate": NaN}',
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"url": 5}',
    b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00",
]
AUTHS = [None, "", "Token", "Bearer", "Basic abc", "token  x", "bearer nope", "TOKEN"]


def paths(pid: str) -> list[tuple[str, str]]:
    P = f"/v1/projects/{pid}"
    return [
        ("GET", "/v1/projects"),
        ("GET", P),
        ("PATCH", P),
        ("GET", P + "/keys"),
        ("POST", P + "/keys"),
        ("GET", P + "/keys/x"),
        ("DELETE", P + "/keys/x"),
        ("GET", P + "/members"),
        ("GET", P + "/requests"),
        ("GET", P + "/requests/x"),
        ("GET", P + "/usage"),
        ("GET", P + "/usage/fields"),
        ("GET", P + "/usage/breakdown"),
        ("GET", P + "/billing/breakdown"),
        ("GET", P + "/billing/fields"),
        ("GET", P + "/balances"),
        ("GET", P + "/balances/x"),
        ("POST", "/v1/auth/grant"),
        ("POST", "/v1/listen"),
        ("POST", "/v1/speak"),
        ("POST", "/v1/read"),
        ("GET", "/v1/projects/not-a-uuid/keys"),
        ("GET", "/v1/projects/%00/keys"),
        ("POST", "/_emulator/projects"),
        ("POST", "/_emulator/faults"),
        ("POST", f"/_emulator/projects/{pid}/requests"),
        ("GET", "/nope"),
        ("PUT", P),
        ("DELETE", "/v1/listen"),
    ]


def test_garbage_never_yields_500(dgemu) -> None:
    rng = random.Random(1234)
    seen_5xx = []
    targets = paths(dgemu.project_id)
    with httpx.Client(base_url=dgemu.base_url, timeout=30) as c:
        for i in range(1500):
            method, path = rng.choice(targets)
            params = [(rng.choice(PARAMS), rng.choice(GARBAGE_VALUES)) for _ in range(rng.randint(0, 4))]
            auth = f"Token {dgemu.owner_key}" if rng.random() < 0.8 else rng.choice(AUTHS)
            headers = {}
            if auth is not None:
                headers["Authorization"] = auth
            if rng.random() < 0.5:
                headers["Content-Type"] = rng.choice(["application/json", "audio/wav", "text/plain", "x/y"])
            body = rng.choice(BODIES) if method in ("POST", "PATCH", "PUT") else None
            try:
                r = c.request(method, path, params=params, headers=headers, content=body)
            except httpx.HTTPError as exc:  # a rejected request line is fine; a crash is not
                raise AssertionError(f"{method} {path} {params}: {exc!r}") from exc
            if r.status_code >= 500 and r.status_code != 503:
                seen_5xx.append(
                    (method, path, params, headers, body[:80] if body else body, r.status_code, r.text[:200])
                )
            if i % 300 == 0:
                c.post("/_emulator/reset", headers={"Authorization": f"Token {dgemu.owner_key}"})
    assert not seen_5xx, seen_5xx[:5]


def test_error_bodies_are_deepgram_shaped(dgemu) -> None:
    with httpx.Client(base_url=dgemu.base_url, timeout=30) as c:
        r = c.get("/v1/projects")
        assert r.status_code == 401 and r.json()["err_code"] == "INVALID_AUTH"
        assert r.json()["err_msg"] == "Invalid credentials." and r.json()["request_id"]
        h = {"Authorization": f"Token {dgemu.owner_key}"}
        r = c.get("/nowhere", headers=h)
        assert r.status_code == 404 and set(r.json()) == {"err_code", "err_msg", "request_id"}
        r = c.put(f"/v1/projects/{dgemu.project_id}", headers=h)
        assert r.status_code == 405 and r.json()["err_code"]
        r = c.post(f"/v1/projects/{dgemu.project_id}/keys", headers=h, content=b"{")
        assert r.status_code == 400 and set(r.json()) == {"category", "message", "details", "request_id"}
        r = c.get("/v1/projects/not-a-uuid", headers=h)
        assert r.status_code == 404 and r.text.startswith("UUID parsing failed")
        r = c.get("/v1/projects/00000000-0000-4000-8000-000000000009", headers=h)
        assert r.status_code == 404 and r.json()["err_code"] == "PROJECT_NOT_FOUND"


def test_huge_numbers_are_400_not_500(dgemu) -> None:
    pid = dgemu.project_id
    with dgemu.client() as c:
        for name in ("limit", "page"):
            for v in ("1e999999999", "-1e999999999", "1e16"):
                r = c.get(f"/v1/projects/{pid}/requests", params={name: v})
                assert r.status_code == 400, (name, v, r.text)
        r = c.post(
            "/v1/listen", params={"encoding": "linear16", "sample_rate": "1e999999999"}, content=b"\0" * 8
        )
        assert r.status_code == 400
        r = c.post("/v1/auth/grant", content=b'{"ttl_seconds": 1e999999999}')
        assert r.status_code == 400
        item = {
            "api_key_id": "k",
            "created": "2026-01-01T00:00:00Z",
            "endpoint": "listen",
            "duration_seconds": 1,
        }
        for bad in ('{"duration_seconds": 1e999999999}', '{"characters": 1e999999999, "endpoint": "speak"}'):
            body = json.dumps({"requests": [item]}).replace('"duration_seconds": 1}', bad[1:])
            r = c.post(f"/_emulator/projects/{pid}/requests", content=body)
            assert r.status_code == 400, (bad, r.text)
