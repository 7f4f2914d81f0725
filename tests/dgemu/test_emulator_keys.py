"""dgemu keys: create/list/get/delete shapes, expiry, status filter, deleted keys rejected."""

from __future__ import annotations

import time


def test_create_list_get_delete_shapes(dgemu) -> None:
    pid = dgemu.project_id
    with dgemu.client() as c:
        r = c.post(
            f"/v1/projects/{pid}/keys",
            json={"comment": "cust", "scopes": ["usage:write"], "tags": ["a", "b"]},
        )
        assert r.status_code == 200
        k = r.json()
        assert set(k) == {"api_key_id", "key", "comment", "scopes", "tags", "created"}
        assert k["scopes"] == ["usage:write"] and k["tags"] == ["a", "b"]
        listed = c.get(f"/v1/projects/{pid}/keys").json()["api_keys"]
        mine = [x for x in listed if x["api_key"]["api_key_id"] == k["api_key_id"]]
        assert len(mine) == 1 and set(mine[0]) == {"member", "api_key"}
        assert "key" not in mine[0]["api_key"] and set(mine[0]["member"]) == {"member_id", "email"}
        assert mine[0]["api_key"]["tags"] == ["a", "b"] and "expiration_date" not in mine[0]["api_key"]
        got = c.get(f"/v1/projects/{pid}/keys/{k['api_key_id']}").json()
        member = got["item"]["member"]
        assert {"member_id", "email", "first_name", "last_name", "api_key"} <= set(member)
        assert member["api_key"]["api_key_id"] == k["api_key_id"] and "key" not in member["api_key"]
        assert c.delete(f"/v1/projects/{pid}/keys/{k['api_key_id']}").json()["message"]
        assert c.get(f"/v1/projects/{pid}/keys/{k['api_key_id']}").status_code == 404
        assert c.delete(f"/v1/projects/{pid}/keys/{k['api_key_id']}").status_code == 404
    with dgemu.client(k["key"]) as c:
        r = c.post("/v1/speak", json={"text": "hi"})
        assert r.status_code == 401 and r.json()["err_code"] == "INVALID_AUTH"


def test_expiry_and_status_filter(dgemu) -> None:
    pid = dgemu.project_id
    with dgemu.client() as c:
        r = c.post(
            f"/v1/projects/{pid}/keys",
            json={"comment": "x", "scopes": ["member"], "time_to_live_in_seconds": 1},
        )
        short = r.json()
        assert short["expiration_date"].endswith("Z")
        r = c.post(
            f"/v1/projects/{pid}/keys",
            json={"comment": "x", "scopes": ["member"], "expiration_date": "2099-01-01T00:00:00Z"},
        )
        assert r.json()["expiration_date"] == "2099-01-01T00:00:00.000000Z"
        both = c.post(
            f"/v1/projects/{pid}/keys",
            json={
                "comment": "x",
                "scopes": ["member"],
                "expiration_date": "2099-01-01T00:00:00Z",
                "time_to_live_in_seconds": 60,
            },
        )
        assert both.status_code == 400 and both.json()["err_code"]
        with dgemu.client(short["key"]) as s:
            assert s.get(f"/v1/projects/{pid}").status_code == 200
        time.sleep(1.2)
        with dgemu.client(short["key"]) as s:
            assert s.get(f"/v1/projects/{pid}").status_code == 401
        expired = c.get(f"/v1/projects/{pid}/keys", params={"status": "expired"}).json()["api_keys"]
        active = c.get(f"/v1/projects/{pid}/keys", params={"status": "active"}).json()["api_keys"]
        assert [x["api_key"]["api_key_id"] for x in expired] == [short["api_key_id"]]
        assert short["api_key_id"] not in {x["api_key"]["api_key_id"] for x in active} and len(active) == 2
        assert c.get(f"/v1/projects/{pid}/keys", params={"status": "gone"}).status_code == 400


def test_scope_checks(dgemu) -> None:
    pid = dgemu.project_id
    with dgemu.client() as c:
        member = c.post(f"/v1/projects/{pid}/keys", json={"comment": "m", "scopes": ["member"]}).json()
        assert (
            c.post(f"/v1/projects/{pid}/keys", json={"comment": "m", "scopes": ["wizard"]}).status_code == 400
        )
    with dgemu.client(member["key"]) as m:
        assert m.get(f"/v1/projects/{pid}/requests").status_code == 200  # usage:read
        assert m.get(f"/v1/projects/{pid}/usage").status_code == 200
        r = m.get(f"/v1/projects/{pid}/billing/breakdown")
        assert r.status_code == 403 and r.json()["err_code"] == "FORBIDDEN"
        assert m.get(f"/v1/projects/{pid}/members").status_code == 403
        # a member cannot mint an owner key
        r = m.post(f"/v1/projects/{pid}/keys", json={"comment": "esc", "scopes": ["owner"]})
        assert r.status_code == 403
        r = m.post(f"/v1/projects/{pid}/keys", json={"comment": "ok", "scopes": ["usage:write"]})
        assert r.status_code == 200
        grant = m.post("/v1/auth/grant", json={})
        assert grant.status_code == 200 and grant.json()["expires_in"] == 30
    with dgemu.client(r.json()["key"]) as narrow:
        assert narrow.post("/v1/auth/grant").status_code == 403
        assert narrow.get(f"/v1/projects/{pid}/keys").status_code == 403
    token = grant.json()["access_token"]
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{pid}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403
        r = c.post("/v1/speak", json={"text": "via token"}, headers={"Authorization": f"BEARER {token}"})
        assert r.status_code == 200
        for ttl in (0, 3601, "x", True):
            assert c.post("/v1/auth/grant", json={"ttl_seconds": ttl}).status_code == 400, ttl
