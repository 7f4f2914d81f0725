"""dgemu live /v1/listen over WebSocket (websockets sync client)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import start_dgemu, stop_dgemu

NOVA3_STREAM = Decimal("0.0048")


def pcm(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    return b"\x02\x00" * int(seconds * rate) * channels


def url(server, **params) -> str:
    q = {"model": "nova-3", "encoding": "linear16", "sample_rate": "16000", **params}
    return server.ws_url + "/v1/listen?" + httpx.QueryParams(q).__str__()


def recv_all(ws) -> list:
    out = []
    try:
        while True:
            m = ws.recv(timeout=10)
            out.append(json.loads(m, parse_float=Decimal))
    except ConnectionClosed:
        pass
    return out


def records(server) -> list[dict]:
    with server.client() as c:
        r = c.get(f"/v1/projects/{server.project_id}/requests", params={"method": "streaming", "limit": 100})
        assert r.status_code == 200
        return json.loads(r.text, parse_float=Decimal)["requests"]


def auth(server) -> dict:
    return {"Authorization": f"Token {server.owner_key}"}


def test_results_finalize_closestream_metadata(dgemu) -> None:
    with connect(url(dgemu), additional_headers=auth(dgemu)) as ws:
        for _ in range(5):
            ws.send(pcm(0.5))  # 2.5 s in total
        ws.send(json.dumps({"type": "KeepAlive"}))
        ws.send(json.dumps({"type": "Finalize"}))
        ws.send(pcm(0.25))
        ws.send(json.dumps({"type": "CloseStream"}))
        msgs = recv_all(ws)
        assert ws.protocol.close_code == 1000
    results = [m for m in msgs if m["type"] == "Results"]
    meta = [m for m in msgs if m["type"] == "Metadata"]
    assert len(meta) == 1 and msgs[-1] is meta[0]
    # per second of audio, then the Finalize flush (0.5 s), then the final flush (0.25 s)
    assert [r["duration"] for r in results] == [1, 1, Decimal("0.5"), Decimal("0.25")]
    assert [r["from_finalize"] for r in results] == [False, False, True, False]
    assert [r["start"] for r in results] == [0, 1, 2, Decimal("2.5")]
    for r in results:
        assert {"type", "channel_index", "duration", "start", "channel", "metadata"} <= set(r)
        assert {"request_id", "model_info", "model_uuid"} <= set(r["metadata"])
    m = meta[0]
    assert m["duration"] == Decimal("2.75") and m["channels"] == 1 and m["transaction_key"] == "deprecated"
    assert {"request_id", "sha256", "created"} <= set(m)
    recs = records(dgemu)
    assert len(recs) == 1 and recs[0]["request_id"] == m["request_id"]
    d = recs[0]["response"]["details"]
    assert d["duration"] == Decimal("2.75") and d["line_item"] == "streaming::nova-3"
    assert d["usd"] == (NOVA3_STREAM * Decimal("2.75") / 60).quantize(Decimal("1E-10"))


def test_keepalive_gets_no_reply_and_garbage_gets_error(dgemu) -> None:
    with connect(url(dgemu), additional_headers=auth(dgemu)) as ws:
        ws.send(json.dumps({"type": "KeepAlive"}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
        ws.send("this is not json")
        err = json.loads(ws.recv(timeout=5))
        assert err["type"] == "Error" and err["description"]
        ws.send(json.dumps({"type": "NoSuchMessage"}))
        assert json.loads(ws.recv(timeout=5))["type"] == "Error"
        ws.send(json.dumps({"type": "CloseStream"}))
        msgs = recv_all(ws)
    assert msgs[-1]["type"] == "Metadata" and msgs[-1]["duration"] == 0


def test_multichannel_stream_bills_each_channel(dgemu) -> None:
    with connect(url(dgemu, channels="2", multichannel="true"), additional_headers=auth(dgemu)) as ws:
        ws.send(pcm(1.5, channels=2))
        ws.send(json.dumps({"type": "CloseStream"}))
        msgs = recv_all(ws)
    idx = [tuple(m["channel_index"]) for m in msgs if m["type"] == "Results"]
    assert idx == [(0, 2), (1, 2), (0, 2), (1, 2)]
    assert msgs[-1]["duration"] == Decimal("1.5") and msgs[-1]["channels"] == 2
    d = records(dgemu)[0]["response"]["details"]
    assert d["duration"] == Decimal("1.5") and d["total_audio"] == 3


def test_wav_container_stream_and_subprotocol_auth(dgemu) -> None:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 12000)  # 1.5 s
    data = buf.getvalue()
    u = dgemu.ws_url + "/v1/listen?model=nova-3"
    with connect(u, subprotocols=["token", dgemu.owner_key]) as ws:
        assert ws.subprotocol == "token"
        ws.send(data[:20])  # header split across frames
        ws.send(data[20:])
        ws.send(json.dumps({"type": "CloseStream"}))
        msgs = recv_all(ws)
    assert msgs[-1]["type"] == "Metadata" and msgs[-1]["duration"] == Decimal("1.5")


def test_grant_token_over_bearer_and_attribution(dgemu) -> None:
    with dgemu.client() as c:
        key = c.post(
            f"/v1/projects/{dgemu.project_id}/keys", json={"comment": "ws", "scopes": ["member"]}
        ).json()
    with dgemu.client(key["key"]) as c:
        token = c.post("/v1/auth/grant", json={"ttl_seconds": 60}).json()["access_token"]
    with connect(url(dgemu), additional_headers={"Authorization": f"bearer {token}"}) as ws:
        ws.send(pcm(1))
        ws.send(json.dumps({"type": "CloseStream"}))
        recv_all(ws)
    with connect(url(dgemu), subprotocols=["bearer", token]) as ws:
        ws.send(json.dumps({"type": "CloseStream"}))
        recv_all(ws)
    recs = records(dgemu)
    assert len(recs) == 2 and {r["api_key_id"] for r in recs} == {key["api_key_id"]}


def test_bad_credentials_rejected_at_handshake(dgemu) -> None:
    for headers in ({"Authorization": "Token nope"}, {}):
        with pytest.raises(InvalidStatus) as err:
            with connect(url(dgemu), additional_headers=headers):
                pass
        assert err.value.response.status_code == 401
    assert records(dgemu) == []


def test_idle_timeout_closes_1011_and_bills_received_audio() -> None:
    server = start_dgemu(["--ws-idle-timeout", "1"])
    try:
        with connect(url(server), additional_headers=auth(server)) as ws:
            ws.send(pcm(0.5))
            t0 = time.monotonic()
            msgs = recv_all(ws)
            waited = time.monotonic() - t0
            assert ws.protocol.close_code == 1011
        assert 0.8 < waited < 5
        assert all(m["type"] != "Metadata" for m in msgs)
        recs = records(server)
        assert len(recs) == 1 and recs[0]["response"]["details"]["duration"] == Decimal("0.5")
    finally:
        stop_dgemu(server)


def test_keepalive_prevents_idle_timeout() -> None:
    server = start_dgemu(["--ws-idle-timeout", "1"])
    try:
        with connect(url(server), additional_headers=auth(server)) as ws:
            for _ in range(4):
                time.sleep(0.5)
                ws.send(json.dumps({"type": "KeepAlive"}))
            ws.send(json.dumps({"type": "CloseStream"}))
            msgs = recv_all(ws)
            assert ws.protocol.close_code == 1000
        assert msgs[-1]["type"] == "Metadata" and msgs[-1]["duration"] == 0
    finally:
        stop_dgemu(server)
