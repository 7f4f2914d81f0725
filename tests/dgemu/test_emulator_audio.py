"""dgemu data plane over real HTTP: audio duration parsing, multichannel billing, corrupt audio, speak."""

from __future__ import annotations

import io
import json
import struct
import wave
from decimal import Decimal

NOVA3_SYNC = Decimal("0.0043")
AURA2 = Decimal("0.030")


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(seconds * rate) * channels)
    return buf.getvalue()


def dec(resp) -> dict:
    return json.loads(resp.text, parse_float=Decimal)


def user_key(dgemu, scopes=("member",)) -> dict:
    with dgemu.client() as c:
        r = c.post(f"/v1/projects/{dgemu.project_id}/keys", json={"comment": "t", "scopes": list(scopes)})
        assert r.status_code == 200, r.text
        return r.json()


def last_record(dgemu) -> dict:
    with dgemu.client() as c:
        r = c.get(f"/v1/projects/{dgemu.project_id}/requests", params={"limit": 1})
        assert r.status_code == 200
        return dec(r)["requests"][0]


def usd(seconds: Decimal, price: Decimal = NOVA3_SYNC) -> Decimal:
    return (price * seconds / 60).quantize(Decimal("1E-10"))


def test_wav_mono_duration_and_record(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post(
            "/v1/listen",
            params={"model": "nova-3", "tag": "t1"},
            content=wav_bytes(2.5),
            headers={"Content-Type": "audio/wav"},
        )
    assert r.status_code == 200, r.text
    body = dec(r)
    meta = body["metadata"]
    assert meta["duration"] == Decimal("2.5") and meta["channels"] == 1
    assert meta["transaction_key"] == "deprecated" and len(meta["sha256"]) == 64
    assert meta["models"][0] in meta["model_info"]
    assert body["results"]["channels"][0]["alternatives"][0]["words"]
    rec = last_record(dgemu)
    assert rec["request_id"] == meta["request_id"]
    assert rec["api_key_id"] == key["api_key_id"] and rec["path"] == "/v1/listen" and rec["code"] == 200
    d = rec["response"]["details"]
    assert d["duration"] == Decimal("2.5") and d["total_audio"] == Decimal("2.5")
    assert d["usd"] == usd(Decimal("2.5")) and d["line_item"] == "sync::nova-3"
    assert d["method"] == "sync" and d["models"] == ["nova-3"] and d["tags"] == ["t1"]


def test_usd_is_an_exact_decimal_on_the_wire(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        assert c.post("/v1/listen?model=nova-3", content=wav_bytes(1.0)).status_code == 200
    with dgemu.client() as c:
        raw = c.get(f"/v1/projects/{dgemu.project_id}/requests").text
    assert '"usd":0.0000716667' in raw  # 0.0043 / 60, 10 places, never through float


def test_wav_stereo_without_multichannel_bills_once(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/listen?model=nova-3", content=wav_bytes(3, rate=8000, channels=2))
    assert r.status_code == 200
    assert dec(r)["metadata"]["duration"] == 3
    d = last_record(dgemu)["response"]["details"]
    assert d["total_audio"] == 3 and d["channels"] == 2 and d["usd"] == usd(Decimal(3))


def test_multichannel_bills_every_channel(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/listen?model=nova-3&multichannel=true", content=wav_bytes(2, channels=3))
    assert r.status_code == 200
    body = dec(r)
    assert body["metadata"]["channels"] == 3 and len(body["results"]["channels"]) == 3
    d = last_record(dgemu)["response"]["details"]
    assert d["duration"] == 2 and d["total_audio"] == 6 and d["usd"] == usd(Decimal(6))
    assert "multichannel" in d["features"]


def test_raw_linear16(dgemu) -> None:
    key = user_key(dgemu)
    pcm = b"\x00\x00" * 24000 * 2 * 3  # 3 s, 2 channels at 24 kHz... = 3 s
    with dgemu.client(key["key"]) as c:
        r = c.post(
            "/v1/listen",
            params={"model": "nova-3", "encoding": "linear16", "sample_rate": "24000", "channels": "2"},
            content=pcm,
        )
        assert r.status_code == 200, r.text
        assert dec(r)["metadata"]["duration"] == 3
        # without sample_rate the raw bytes cannot be measured
        r = c.post("/v1/listen", params={"model": "nova-3", "encoding": "linear16"}, content=pcm)
        assert r.status_code == 400


def test_corrupt_audio_is_a_legacy_400_and_a_failed_record(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        for payload in (b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk", wav_bytes(1)[:30]):
            r = c.post("/v1/listen?model=nova-3", content=payload)
            assert r.status_code == 400, (payload, r.text)
            body = r.json()
            assert set(body) == {"err_code", "err_msg", "request_id"}
    rec = last_record(dgemu)
    assert rec["code"] == 400 and "details" not in rec["response"] and rec["response"]["message"]
    with dgemu.client() as c:
        failed = c.get(f"/v1/projects/{dgemu.project_id}/requests", params={"status": "failed", "limit": 100})
        ok = c.get(f"/v1/projects/{dgemu.project_id}/requests", params={"status": "succeeded"})
        bill = dec(c.get(f"/v1/projects/{dgemu.project_id}/billing/breakdown"))
    assert len(failed.json()["requests"]) == 4 and ok.json()["requests"] == []
    assert bill["results"] == []  # failures are not billed


def test_url_body_is_rejected_offline(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/listen?model=nova-3", json={"url": "https://example.com/a.wav"})
        assert r.status_code == 400 and r.json()["err_code"]
        r = c.post("/v1/listen?model=nova-3", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["category"] == "INVALID_JSON"


def test_unknown_model_is_400(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/listen?model=no-such-model", content=wav_bytes(1))
    assert r.status_code == 400


def test_speak_bills_characters_and_returns_audio(dgemu) -> None:
    key = user_key(dgemu)
    text = "Hello from the emulator, " * 4  # 100 characters
    with dgemu.client(key["key"]) as c:
        r = c.post(
            "/v1/speak",
            params={"model": "aura-2-thalia-en", "encoding": "linear16", "tag": "s"},
            json={"text": text},
        )
    assert r.status_code == 200
    assert r.headers["dg-char-count"] == "100" and r.headers["dg-model-name"] == "aura-2-thalia-en"
    assert r.headers["dg-project-id"] == dgemu.project_id and r.headers["dg-request-id"]
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 0
    rec = last_record(dgemu)
    assert rec["request_id"] == r.headers["dg-request-id"] and rec["path"] == "/v1/speak"
    d = rec["response"]["details"]
    assert d["characters"] == 100 and d["line_item"] == "sync::aura-2" and d["total_audio"] == 0
    assert d["usd"] == AURA2 * 100 / 1000


def test_speak_mp3_default_and_limits(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/speak?model=aura-2-thalia-en", json={"text": "hi"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("audio/mpeg") and r.content
        r = c.post("/v1/speak?model=aura-2-thalia-en", json={"text": "x" * 2000})
        assert r.status_code == 200
        r = c.post("/v1/speak?model=aura-2-thalia-en", json={"text": "x" * 2001})
        assert r.status_code == 413 and r.json()["err_code"]
        r = c.post("/v1/speak?model=aura-2-thalia-en", json={"nope": 1})
        assert r.status_code == 400
        r = c.post(
            "/v1/speak?model=aura-2-thalia-en", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["category"] == "INVALID_JSON"
    with dgemu.client() as c:
        recs = c.get(f"/v1/projects/{dgemu.project_id}/requests", params={"endpoint": "speak", "limit": 10})
    codes = sorted(x["code"] for x in recs.json()["requests"])
    assert codes == [200, 200, 400, 400, 413]


def test_read_bills_tokens(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/read?summarize=true", json={"text": "a" * 400})
    assert r.status_code == 200
    info = r.json()["metadata"]["metadata"]["summary_info"]
    d = last_record(dgemu)["response"]["details"]
    assert d["tokens_in"] == info["input_tokens"] == 100 and d["tokens_out"] == info["output_tokens"]
    assert d["line_item"] == "sync::read" and d["usd"] > 0


def test_data_plane_needs_usage_write(dgemu) -> None:
    key = user_key(dgemu, scopes=("keys:read",))
    with dgemu.client(key["key"]) as c:
        r = c.post("/v1/listen?model=nova-3", content=wav_bytes(1))
    assert r.status_code == 403 and r.json()["err_code"] == "FORBIDDEN"


def test_struct_helper_sanity() -> None:
    # the WAV helper writes exactly the frames it claims (guards the other tests)
    data = wav_bytes(1.5, rate=8000, channels=2)
    assert struct.unpack_from("<I", data, 40)[0] == 8000 * 1.5 * 4


def test_callback_makes_an_async_record_and_answers_request_id(dgemu) -> None:
    key = user_key(dgemu)
    with dgemu.client(key["key"]) as c:
        r = c.post(
            "/v1/listen",
            params={"model": "nova-3", "callback": "http://127.0.0.1:9/cb"},
            content=wav_bytes(6),
        )
    assert r.status_code == 200 and set(r.json()) == {"request_id"}
    rec = last_record(dgemu)
    d = rec["response"]["details"]
    assert rec["request_id"] == r.json()["request_id"]
    assert d["method"] == "async" and d["line_item"] == "async::nova-3" and d["usd"] == usd(Decimal(6))
