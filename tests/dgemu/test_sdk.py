"""The official ``deepgram-sdk`` 7.16.0 against dgemu, changing nothing but its environment (hosts).

The SDK validates nothing it receives (API_NOTES §5.4), so every call here also checks the values it got.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
import wave

import pytest
from deepgram import DeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1.types.listen_v1metadata import ListenV1Metadata
from deepgram.listen.v1.types.listen_v1results import ListenV1Results
from websockets.exceptions import InvalidStatus

from . import spec
from .audio import tone

NO_RETRY = {"max_retries": 0}


def environment(dg) -> DeepgramClientEnvironment:
    return DeepgramClientEnvironment(base=dg.base_url, production=dg.ws_url, agent=dg.ws_url,
                                     agent_rest=dg.base_url)


def sdk(dg, key: str | None = None, *, access_token: str | None = None) -> DeepgramClient:
    if access_token is not None:
        return DeepgramClient(access_token=access_token, environment=environment(dg))
    return DeepgramClient(api_key=key or dg.owner_key, environment=environment(dg))


@pytest.fixture
def client(dgemu) -> DeepgramClient:
    return sdk(dgemu)


def test_sdk_sends_what_we_think(dgemu) -> None:
    """Guard on the SDK itself: the environment is used and a UTC datetime becomes ``…Z``."""
    from deepgram.core.datetime_utils import serialize_datetime

    c = sdk(dgemu)
    assert c._client_wrapper.get_environment().base == dgemu.base_url
    when = dt.datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert serialize_datetime(when) == "2026-11-01T12:00:00.123456Z"


def test_keys_create_list_get_delete(dgemu, client: DeepgramClient) -> None:
    pid = dgemu.project_id
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    created = client.manage.v1.projects.keys.create(
        pid, request={"comment": "sdk key", "scopes": ["usage:write"], "tags": ["sdk", "t2"],
                      "expiration_date": expires.isoformat().replace("+00:00", "Z")})
    assert created.api_key_id and created.key
    assert created.comment == "sdk key" and "usage:write" in created.scopes and created.tags == ["sdk", "t2"]
    assert created.expiration_date == expires

    listed = client.manage.v1.projects.keys.list(pid)
    by_id = {k.api_key.api_key_id: k for k in listed.api_keys}
    assert created.api_key_id in by_id
    item = by_id[created.api_key_id]
    assert item.api_key.comment == "sdk key" and "usage:write" in item.api_key.scopes
    assert isinstance(item.api_key.created, dt.datetime) and item.member.member_id
    assert not hasattr(item.api_key, "key") or getattr(item.api_key, "key", None) is None
    active = client.manage.v1.projects.keys.list(pid, status="active")
    assert created.api_key_id in {k.api_key.api_key_id for k in active.api_keys}

    got = client.manage.v1.projects.keys.get(pid, created.api_key_id)
    assert got.item.member.api_key.api_key_id == created.api_key_id
    assert got.item.member.api_key.tags == ["sdk", "t2"]
    assert got.item.member.api_key.expiration_date == expires

    # the new key works on the data plane
    assert sdk(dgemu, created.key).listen.v1.media.transcribe_file(request=tone("0.5").wav(), model="nova-3")

    deleted = client.manage.v1.projects.keys.delete(pid, created.api_key_id)
    assert isinstance(deleted.message, str)
    with pytest.raises(ApiError) as err:
        client.manage.v1.projects.keys.get(pid, created.api_key_id, request_options=NO_RETRY)
    assert err.value.status_code == 404
    remaining = client.manage.v1.projects.keys.list(pid).api_keys
    assert created.api_key_id not in {k.api_key.api_key_id for k in remaining}
    with pytest.raises(ApiError) as err:
        sdk(dgemu, created.key).listen.v1.media.transcribe_file(
            request=tone("0.5").wav(), model="nova-3", request_options=NO_RETRY)
    assert err.value.status_code == 401


def test_transcribe_file(dgemu, client: DeepgramClient) -> None:
    audio = tone("3.2", channels=2)
    resp = client.listen.v1.media.transcribe_file(request=audio.wav(), model="nova-3", multichannel=True,
                                                  tag=["sdk-a", "sdk-b"], smart_format=True)
    assert resp.metadata.duration == float(audio.duration)
    assert resp.metadata.channels == 2
    assert len(resp.results.channels) == 2
    assert resp.metadata.tags == ["sdk-a", "sdk-b"]
    uuid.UUID(resp.metadata.request_id)
    rec = client.manage.v1.projects.requests.get(dgemu.project_id, resp.metadata.request_id)
    assert rec.request.request_id == resp.metadata.request_id
    assert rec.request.response["details"]["tags"] == ["sdk-a", "sdk-b"]


def test_speak_generate(dgemu, client: DeepgramClient) -> None:
    text = "The SDK speaks through dgemu."
    chunks = list(client.speak.v1.audio.generate(text=text, model="aura-2-thalia-en", encoding="linear16",
                                                 container="wav", sample_rate=24000))
    data = b"".join(chunks)
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 0
    default = b"".join(client.speak.v1.audio.generate(text=text))
    assert default, "default encoding (mp3) produced no bytes"
    page = client.manage.v1.projects.requests.list(dgemu.project_id, endpoint="speak", limit=10)
    assert len(page.requests) == 2
    for r in page.requests:
        assert r.response["details"]["characters"] == len(text)


def test_live_listen(dgemu, client: DeepgramClient) -> None:
    audio = tone("2")
    received = []
    with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000, channels=1,
                                  interim_results=False, tag="sdk-live") as sock:
        for chunk in audio.chunks(0.5)[:2]:
            sock.send_media(chunk)
        sock.send_keep_alive()
        sock.send_finalize()
        for chunk in audio.chunks(0.5)[2:]:
            sock.send_media(chunk)
        sock.send_close_stream()
        for msg in sock:
            received.append(msg)
    results = [m for m in received if isinstance(m, ListenV1Results)]
    metas = [m for m in received if isinstance(m, ListenV1Metadata)]
    assert results, received
    assert len(metas) == 1 and received[-1] is metas[0], received
    assert metas[0].type == "Metadata" and metas[0].duration == 2.0 and metas[0].channels == 1
    for r in results:
        assert r.type == "Results" and r.channel.alternatives and r.metadata.request_id == metas[0].request_id
    assert sum(r.duration for r in results if r.is_final) == pytest.approx(2.0)
    rec = client.manage.v1.projects.requests.get(dgemu.project_id, metas[0].request_id).request
    assert rec.response["details"]["method"] == "streaming"
    assert rec.response["details"]["tags"] == ["sdk-live"]


def _seed(dgemu, n: int = 5) -> tuple[dict, list[str], dt.datetime]:
    owner = dgemu.client()
    key = spec.create_key(owner, dgemu.project_id, ["usage:write"])
    base = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    spec.inject(owner, dgemu.project_id, [
        {"api_key_id": key["api_key_id"], "created": (base + dt.timedelta(minutes=i, microseconds=250000))
         .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "endpoint": "listen", "method": "sync", "model": "nova-3",
         "duration_seconds": 10 + i, "request_id": rid}
        for i, rid in enumerate(ids)
    ])
    owner.close()
    return key, ids, base


def test_requests_list_filters_and_paging(dgemu, client: DeepgramClient) -> None:
    key, ids, base = _seed(dgemu)
    other, _, _ = _seed(dgemu, 2)
    pid = dgemu.project_id
    # datetimes as the SDK sends them (…Z with microseconds); end is inclusive (docs/dgemu.md)
    start = base + dt.timedelta(minutes=1, microseconds=250000)
    end = base + dt.timedelta(minutes=3, microseconds=250000)
    page = client.manage.v1.projects.requests.list(pid, start=start, end=end, accessor=key["api_key_id"],
                                                   limit=100)
    assert [r.request_id for r in page.requests] == [ids[3], ids[2], ids[1]]
    assert all(r.api_key_id == key["api_key_id"] for r in page.requests)
    # paging, newest first, 0-based, stop on a short page
    seen = []
    for p in range(10):
        pg = client.manage.v1.projects.requests.list(pid, accessor=key["api_key_id"], limit=2, page=p)
        assert pg.page == p and pg.limit == 2
        seen += [r.request_id for r in pg.requests]
        if len(pg.requests) < 2:
            break
    assert seen == list(reversed(ids))
    one = client.manage.v1.projects.requests.list(pid, request_id=ids[0], endpoint="listen", method="sync",
                                                  status="succeeded", deployment="hosted")
    assert [r.request_id for r in one.requests] == [ids[0]]
    assert client.manage.v1.projects.requests.list(pid, method="streaming").requests == []
    got = client.manage.v1.projects.requests.get(pid, ids[2]).request
    assert got.api_key_id == key["api_key_id"] and got.response["details"]["duration"] == 12
    assert isinstance(got.created, dt.datetime)
    assert got.created == base + dt.timedelta(minutes=2, microseconds=250000)
    assert other["api_key_id"] != key["api_key_id"]


def test_usage_and_billing(dgemu, client: DeepgramClient) -> None:
    key, ids, base = _seed(dgemu)
    pid = dgemu.project_id
    day = str(base.date())
    usage = client.manage.v1.projects.usage.get(pid, start=day, end=day, accessor=key["api_key_id"])
    assert usage.start == day and usage.end == day and usage.resolution.units
    breakdown = client.manage.v1.projects.usage.breakdown.get(pid, start=day, end=day, grouping="accessor")
    rows = [r for r in breakdown.results if r.grouping.accessor == key["api_key_id"]]
    assert len(rows) == 1 and rows[0].requests == 5
    assert rows[0].hours == pytest.approx((10 + 11 + 12 + 13 + 14) / 3600)
    fields = client.manage.v1.projects.usage.fields.list(pid, start=day, end=day)
    assert "sync" in fields.processing_methods

    bill = client.manage.v1.projects.billing.breakdown.list(pid, start=day, end=day,
                                                            grouping=["accessor", "line_item"])
    groups = [(r.grouping.accessor, r.grouping.line_item) for r in bill.results]
    assert groups == [(key["api_key_id"], "sync::nova-3")]
    assert bill.results[0].dollars == pytest.approx(0.0043 * 60 / 60, rel=1e-9)  # 60 s of sync nova-3
    bfields = client.manage.v1.projects.billing.fields.list(pid, start=day, end=day)
    assert bfields.accessors == [key["api_key_id"]]
    assert bfields.line_items == {"sync::nova-3": "Nova - 3 (Sync)"}

    balances = client.manage.v1.projects.billing.balances.list(pid)
    assert balances.balances
    b0 = balances.balances[0]
    one = client.manage.v1.projects.billing.balances.get(pid, b0.balance_id)
    assert one.balance_id == b0.balance_id and one.amount == b0.amount and one.units.lower() == "usd"


def test_projects_and_members(dgemu, client: DeepgramClient) -> None:
    projects = client.manage.v1.projects.list()
    assert dgemu.project_id in {p.project_id for p in projects.projects}
    assert client.manage.v1.projects.get(dgemu.project_id).project_id == dgemu.project_id
    members = client.manage.v1.projects.members.list(dgemu.project_id)
    assert members.members and members.members[0].member_id


def test_grant_token(dgemu, client: DeepgramClient) -> None:
    grant = client.auth.v1.tokens.grant(ttl_seconds=60)
    assert grant.access_token and grant.expires_in == 60
    tok = sdk(dgemu, access_token=grant.access_token)
    resp = tok.listen.v1.media.transcribe_file(request=tone("1").wav(), model="nova-3")
    assert resp.metadata.duration == 1.0
    audio = b"".join(tok.speak.v1.audio.generate(text="token speech", model="aura-2-thalia-en"))
    assert audio
    with tok.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as sock:
        sock.send_media(tone("0.5").pcm)
        sock.send_close_stream()
        msgs = list(sock)
    assert isinstance(msgs[-1], ListenV1Metadata) and msgs[-1].duration == 0.5
    # the token is not accepted on management, nor to mint more tokens
    for call in (lambda: tok.manage.v1.projects.list(request_options=NO_RETRY),
                 lambda: tok.manage.v1.projects.keys.list(dgemu.project_id, request_options=NO_RETRY),
                 lambda: tok.auth.v1.tokens.grant(request_options=NO_RETRY)):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status_code in (401, 403), err.value
        assert isinstance(err.value.body, dict) and err.value.body.get("err_code") in {
            "INVALID_AUTH", "FORBIDDEN", "INSUFFICIENT_PERMISSIONS"}, err.value.body


def test_errors_surface_as_sdk_errors(dgemu) -> None:
    bad = sdk(dgemu, "f" * 40)
    with pytest.raises(ApiError) as err:
        bad.manage.v1.projects.list(request_options=NO_RETRY)
    assert err.value.status_code == 401 and err.value.body["err_code"] == "INVALID_AUTH"
    # SDK 7.16 catches the legacy InvalidStatusCode, but websockets 15's sync client raises InvalidStatus,
    # so a handshake 401 surfaces as either; both must carry the 401
    with pytest.raises((ApiError, InvalidStatus)) as ws_err, bad.listen.v1.connect(model="nova-3") as sock:
        sock.send_close_stream()
    exc = ws_err.value
    assert (exc.status_code if isinstance(exc, ApiError) else exc.response.status_code) == 401
    from deepgram.errors.bad_request_error import BadRequestError
    with pytest.raises(BadRequestError) as err:
        sdk(dgemu).manage.v1.projects.requests.list(dgemu.project_id, limit=5000, request_options=NO_RETRY)
    assert err.value.body["err_code"] == "INVALID_QUERY_PARAMETER"


def test_paging_is_stable_when_timestamps_tie(dgemu, client: DeepgramClient) -> None:
    """25 records with the same ``created``: offset pages must neither repeat nor skip a record."""
    owner = dgemu.client()
    key = spec.create_key(owner, dgemu.project_id, ["usage:write"])
    same = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ids = {str(uuid.uuid4()) for _ in range(25)}
    spec.inject(owner, dgemu.project_id, [
        {"api_key_id": key["api_key_id"], "created": same, "endpoint": "listen", "method": "sync",
         "model": "nova-3", "duration_seconds": 1, "request_id": rid} for rid in ids])
    owner.close()
    seen: list[str] = []
    for page in range(4):
        got = client.manage.v1.projects.requests.list(dgemu.project_id, limit=10.0, page=float(page))
        seen += [r.request_id for r in got.requests]
    assert len(seen) == 25 and set(seen) == ids
    assert seen == sorted(ids, reverse=True), "ties are ordered by request_id, descending (docs/dgemu.md)"


def test_async_client(dgemu) -> None:
    """AsyncDeepgramClient: its WebSocket goes through websockets' legacy client (``extra_headers``)."""
    import asyncio

    from deepgram import AsyncDeepgramClient

    async def run() -> tuple[float, list]:
        client = AsyncDeepgramClient(api_key=dgemu.owner_key, environment=environment(dgemu))
        resp = await client.listen.v1.media.transcribe_file(request=tone("1.5").wav(), model="nova-3")
        got = []
        async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as sock:
            await sock.send_media(tone("1").pcm)
            await sock.send_finalize()
            await sock.send_close_stream()
            async for msg in sock:
                got.append(msg)
        keys = await client.manage.v1.projects.keys.list(dgemu.project_id)
        assert keys.api_keys
        return resp.metadata.duration, got

    duration, got = asyncio.run(run())
    assert duration == 1.5
    assert isinstance(got[-1], ListenV1Metadata) and got[-1].duration == 1.0
    assert any(isinstance(m, ListenV1Results) and m.from_finalize for m in got)


def test_read_analyze(dgemu, client: DeepgramClient) -> None:
    text = "The emulator reads. It summarizes and counts tokens."
    resp = client.read.v1.text.analyze(request={"text": text}, summarize=True, sentiment=True)
    info = resp.metadata.metadata
    assert info.summary_info.input_tokens > 0 and info.sentiment_info.output_tokens > 0
    rec = client.manage.v1.projects.requests.get(dgemu.project_id, info.request_id).request
    details = rec.response["details"]
    assert details["tokens_in"] == info.summary_info.input_tokens + info.sentiment_info.input_tokens
    assert details["tokens_out"] == info.summary_info.output_tokens + info.sentiment_info.output_tokens
