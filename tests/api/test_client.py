"""keyledger.client against the live API and dgemu: a ready Deepgram SDK client for a customer, which
follows a rotation after ``invalidate``; errors carry keyledger's problem detail."""

from __future__ import annotations

import pytest
from deepgram.core.api_error import ApiError

from keyledger.client import KeyledgerClient, KeyledgerClientError

TEXT = "Billed to the right customer."


def test_client_gives_a_working_sdk_client_and_follows_rotation(api):
    cust = api.customer("acme")
    with api.client() as c:
        first = c.post(f"/customers/{cust['id']}/keys").json()
    with KeyledgerClient(api.base_url, api.admin_token) as kl:
        creds = kl.credentials("acme")
        assert creds.api_key == first["secret"] and first["secret"] not in repr(creds)
        dg = kl.deepgram("acme")
        assert b"".join(dg.speak.v1.audio.generate(text=TEXT))
        with api.client() as c:
            rotated = c.post(f"/customers/{cust['id']}/keys/{first['id']}/rotate").json()
        with pytest.raises(ApiError) as err:  # the cached key was deleted at Deepgram
            b"".join(kl.deepgram("acme").speak.v1.audio.generate(text=TEXT))
        assert err.value.status_code == 401
        kl.invalidate("acme")
        assert kl.credentials("acme").api_key == rotated["secret"]
        assert b"".join(kl.deepgram("acme").speak.v1.audio.generate(text=TEXT))
        # every request made with the SDK is attributed to acme's keys at Deepgram
        with api.dgemu.client() as d:
            r = d.get(f"/v1/projects/{api.dgemu.project_id}/requests", params={"limit": 10})
        recs = r.json()["requests"]
        assert {x["api_key_id"] for x in recs} == {first["api_key_id"], rotated["api_key_id"]}
        with pytest.raises(KeyledgerClientError) as missing:
            kl.credentials("nobody")
        assert missing.value.status == 404 and "nobody" in missing.value.detail
    with KeyledgerClient(api.base_url, "kla_wrong") as bad, pytest.raises(KeyledgerClientError) as denied:
        bad.credentials("acme")
    assert denied.value.status == 401
