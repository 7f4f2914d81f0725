"""Attribution: every data-plane call becomes a request record carrying the caller's key id, the right
quantity and the right cost; the billing breakdown sums to exactly the records.

Expectations are computed here, independently of dgemu's code, from its shipped price file
(``src/dgemu/data/prices.json``) and the audio this test generates, in Decimal:
``usd = price × quantity`` quantized to 10 places half-even (docs/dgemu.md), with quantity = billed
minutes (``total_audio``/60) for STT and thousands of characters for TTS. JSON is parsed with
``parse_float=Decimal`` so no float rounding hides a difference.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from . import spec
from .audio import Audio, tone

PRICE_FILE = Path(__file__).resolve().parents[2] / "src" / "dgemu" / "data" / "prices.json"
TEN_PLACES = Decimal("1E-10")


@dataclass(frozen=True)
class Price:
    line_item: str
    unit: str
    price: Decimal


def price_rows() -> list[dict]:
    return json.loads(PRICE_FILE.read_text(), parse_float=Decimal)["items"]


def price_for(endpoint: str, method: str, model: str) -> Price:
    """The row whose family is the longest prefix of the model name (docs/dgemu.md, line items)."""
    rows = [r for r in price_rows() if r["endpoint"] == endpoint and r["method"] == method
            and (model == r["family"] or model.startswith(r["family"] + "-"))]
    assert rows, f"no price for {endpoint} {method} {model}"
    row = max(rows, key=lambda r: len(r["family"]))
    return Price(row["line_item"], row["unit"], Decimal(str(row["price"])))


def usd(p: Price, *, seconds: Decimal = Decimal(0), characters: int = 0) -> Decimal:
    if p.unit == "minute":
        value = p.price * seconds / 60
    elif p.unit == "1k_characters":
        value = p.price * characters / 1000
    else:
        raise AssertionError(p.unit)
    return value.quantize(TEN_PLACES, rounding=ROUND_HALF_EVEN)


def dec_json(resp: httpx.Response):
    assert resp.status_code == 200, f"{resp.request.url} → {resp.status_code}: {resp.text[:500]}"
    return json.loads(resp.content, parse_float=Decimal)


@dataclass
class Expected:
    request_id: str
    api_key_id: str
    line_item: str
    usd: Decimal
    duration: Decimal | None = None
    total_audio: Decimal | None = None
    channels: int | None = None
    characters: int | None = None
    tags: list[str] | None = None
    method: str | None = None
    path: str | None = None


# --------------------------------------------------------------------------- data-plane calls


def listen_rest(dg, key: str, audio: Audio, *, model: str = "nova-3", multichannel: bool | None = None,
                tags: list[str] | None = None, scheme: str = "Token") -> str:
    params: list[tuple[str, str]] = [("model", model)]
    if multichannel is not None:
        params.append(("multichannel", str(multichannel).lower()))
    params += [("tag", t) for t in tags or []]
    resp = httpx.post(f"{dg.base_url}/v1/listen", params=params, content=audio.wav(), timeout=30,
                      headers={"Authorization": f"{scheme} {key}", "Content-Type": "audio/wav"})
    body = spec.check_ok(resp, "/v1/listen")
    assert Decimal(str(body["metadata"]["duration"])) == audio.duration
    return body["metadata"]["request_id"]


def speak_rest(dg, key: str, text: str, *, model: str = "aura-2-thalia-en", scheme: str = "Token") -> str:
    resp = httpx.post(f"{dg.base_url}/v1/speak", params={"model": model}, json={"text": text}, timeout=30,
                      headers={"Authorization": f"{scheme} {key}"})
    assert resp.status_code == 200, resp.text[:500]
    assert resp.content and resp.headers["content-type"].startswith("audio/")
    return resp.headers["dg-request-id"]


def listen_ws(dg, key: str, audio: Audio, *, multichannel: bool = False, keepalives: int = 2,
              scheme: str = "Token") -> str:
    query = (f"model=nova-3&encoding=linear16&sample_rate={audio.sample_rate}&channels={audio.channels}"
             f"&multichannel={str(multichannel).lower()}")
    auth = {"Authorization": f"{scheme} {key}"}
    with ws_connect(f"{dg.ws_url}/v1/listen?{query}", additional_headers=auth) as ws:
        chunks = audio.chunks(0.25)
        half = len(chunks) // 2
        for c in chunks[:half]:
            ws.send(c)
        for _ in range(keepalives):  # idle time with KeepAlive is not billed
            ws.send('{"type":"KeepAlive"}')
            time.sleep(0.2)
        for c in chunks[half:]:
            ws.send(c)
        ws.send('{"type":"CloseStream"}')
        messages = [json.loads(m) for m in ws]
    md = messages[-1]
    assert md["type"] == "Metadata", messages
    assert Decimal(str(md["duration"])) == audio.duration and md["channels"] == audio.channels
    return md["request_id"]


# --------------------------------------------------------------------------- the test


@pytest.fixture
def owner(dgemu):
    with dgemu.client() as c:
        yield c


def test_every_data_plane_call_is_attributed_and_priced(dgemu, owner) -> None:
    pid = dgemu.project_id
    a = spec.create_key(owner, pid, ["usage:write"])
    b = spec.create_key(owner, pid, ["usage:write"])
    c = spec.create_key(owner, pid, ["member"])
    with dgemu.client(c["key"]) as cc:
        token = spec.check_ok(cc.post("/v1/auth/grant", json={"ttl_seconds": 300}))["access_token"]
    sync3, stream3 = price_for("listen", "sync", "nova-3"), price_for("listen", "streaming", "nova-3")
    tts = price_for("speak", "sync", "aura-2-thalia-en")
    items = (sync3.line_item, stream3.line_item, tts.line_item)
    assert items == ("sync::nova-3", "streaming::nova-3", "sync::aura-2")
    expected: list[Expected] = []

    mono = tone("2.5")
    rid = listen_rest(dgemu, a["key"], mono, tags=["alpha", "beta"])
    expected.append(Expected(rid, a["api_key_id"], "sync::nova-3", usd(sync3, seconds=mono.duration),
                             mono.duration, mono.duration, 1, tags=["alpha", "beta"], method="sync",
                             path="/v1/listen"))

    stereo = tone("3.1", channels=2)
    rid = listen_rest(dgemu, b["key"], stereo, multichannel=True)
    expected.append(Expected(rid, b["api_key_id"], "sync::nova-3", usd(sync3, seconds=2 * stereo.duration),
                             stereo.duration, 2 * stereo.duration, 2, method="sync"))

    rid = listen_rest(dgemu, b["key"], stereo, multichannel=False)  # not multichannel: billed once
    expected.append(Expected(rid, b["api_key_id"], "sync::nova-3", usd(sync3, seconds=stereo.duration),
                             stereo.duration, stereo.duration, 2))  # details.channels: the audio's (docs)

    medical = tone("1.75")
    rid = listen_rest(dgemu, a["key"], medical, model="nova-3-medical")  # family nova-3 (docs/dgemu.md)
    expected.append(Expected(rid, a["api_key_id"], "sync::nova-3", usd(sync3, seconds=medical.duration),
                             medical.duration, medical.duration))

    text = "Attribution test: the quick brown fox jumps over the lazy dog."
    rid = speak_rest(dgemu, a["key"], text)
    expected.append(Expected(rid, a["api_key_id"], "sync::aura-2", usd(tts, characters=len(text)),
                             total_audio=Decimal(0), characters=len(text), method="sync", path="/v1/speak"))

    live = tone("1.5")
    rid = listen_ws(dgemu, b["key"], live)
    expected.append(Expected(rid, b["api_key_id"], "streaming::nova-3", usd(stream3, seconds=live.duration),
                             live.duration, live.duration, 1, method="streaming", path="/v1/listen"))

    live2 = tone("1", channels=2)
    rid = listen_ws(dgemu, a["key"], live2, multichannel=True)
    expected.append(Expected(rid, a["api_key_id"], "streaming::nova-3",
                             usd(stream3, seconds=2 * live2.duration), live2.duration, 2 * live2.duration, 2,
                             method="streaming"))

    # a grant token's usage belongs to the key that minted it
    tok_audio = tone("1.25")
    rid = listen_rest(dgemu, token, tok_audio, scheme="Bearer")
    expected.append(Expected(rid, c["api_key_id"], "sync::nova-3", usd(sync3, seconds=tok_audio.duration),
                             tok_audio.duration, tok_audio.duration, 1))
    rid = speak_rest(dgemu, token, "token speech", scheme="bearer")
    expected.append(Expected(rid, c["api_key_id"], "sync::aura-2", usd(tts, characters=len("token speech")),
                             characters=len("token speech")))
    tok_live = tone("0.75")
    rid = listen_ws(dgemu, token, tok_live, scheme="Bearer")
    expected.append(Expected(rid, c["api_key_id"], "streaming::nova-3",
                             usd(stream3, seconds=tok_live.duration),
                             tok_live.duration, tok_live.duration))

    assert len({e.request_id for e in expected}) == len(expected), "request ids must be unique"

    # ---- money on the wire: exact fixed-point JSON numbers, at most 10 decimals (docs/dgemu.md)
    raw = owner.get(f"/v1/projects/{pid}/requests", params={"limit": 1000}).text
    amounts = re.findall(r'"usd":([^,}]+)', raw)
    assert len(amounts) == len(expected)
    for text in amounts:
        assert re.fullmatch(r"-?\d+(\.\d{1,10})?", text), f"usd written as {text!r}"

    # ---- each record
    problems = []
    for e in expected:
        rec = dec_json(owner.get(f"/v1/projects/{pid}/requests/{e.request_id}"))["request"]
        d = rec["response"]["details"]
        checks = {
            "api_key_id": (rec["api_key_id"], e.api_key_id),
            "usd": (d.get("usd"), e.usd),
            "code": (rec.get("code"), 200),
            "project_uuid": (rec.get("project_uuid"), pid),
        }
        if e.duration is not None:
            checks["duration"] = (d.get("duration"), e.duration)
        if e.total_audio is not None:
            checks["total_audio"] = (d.get("total_audio"), e.total_audio)
        if e.channels is not None:
            checks["channels"] = (d.get("channels"), e.channels)
        if e.characters is not None:
            checks["characters"] = (d.get("characters"), e.characters)
        if e.tags is not None:
            checks["tags"] = (d.get("tags"), e.tags)
        if e.method is not None:
            checks["method"] = (d.get("method"), e.method)
        if e.path is not None:
            checks["path"] = (rec.get("path"), e.path)
        for name, (got, want) in checks.items():
            if got != want:
                problems.append(f"{e.line_item} {e.request_id}: {name} = {got!r}, expected {want!r}")
    assert not problems, "\n".join(problems)

    # ---- the log per accessor
    for key in (a, b, c):
        page = dec_json(owner.get(f"/v1/projects/{pid}/requests",
                                  params={"accessor": key["api_key_id"], "limit": 1000}))
        assert {r["request_id"] for r in page["requests"]} == {
            e.request_id for e in expected if e.api_key_id == key["api_key_id"]}

    # ---- billing breakdown grouped by accessor + line item sums to exactly the records
    today = str(dt.datetime.now(dt.UTC).date())
    bill = dec_json(owner.get(f"/v1/projects/{pid}/billing/breakdown",
                              params=[("start", today), ("end", today), ("grouping", "accessor"),
                                      ("grouping", "line_item")]))
    spec.assert_valid(spec.response_validator("GET", "/v1/projects/{project_id}/billing/breakdown"),
                      json.loads(json.dumps(bill, default=float)), "billing breakdown")
    raw_bill = owner.get(f"/v1/projects/{pid}/billing/breakdown", params={"start": today, "end": today}).text
    for text in re.findall(r'"dollars":([^,}]+)', raw_bill):
        assert re.fullmatch(r"-?\d+(\.\d{1,10})?", text), f"dollars written as {text!r}"
    got = {(r["grouping"]["accessor"], r["grouping"]["line_item"]): r["dollars"] for r in bill["results"]}
    want: dict[tuple[str, str], Decimal] = {}
    for e in expected:
        want[(e.api_key_id, e.line_item)] = want.get((e.api_key_id, e.line_item), Decimal(0)) + e.usd
    assert got == want
    assert sum(got.values()) == sum(e.usd for e in expected)

    # ---- and ungrouped, the day's total
    day = {"start": today, "end": today}
    total = dec_json(owner.get(f"/v1/projects/{pid}/billing/breakdown", params=day))
    assert sum(r["dollars"] for r in total["results"]) == sum(e.usd for e in expected)

    # ---- usage breakdown per accessor (docs/dgemu.md units: hours = Σ duration / 3600, total_hours =
    # Σ total_audio / 3600 over listen records, each quantized to 10 places; tts_characters = Σ characters)
    usage = dec_json(owner.get(f"/v1/projects/{pid}/usage/breakdown", params={**day, "grouping": "accessor"}))
    rows = {r["grouping"]["accessor"]: r for r in usage["results"]}
    assert set(rows) == {e.api_key_id for e in expected}
    for key_id, row in rows.items():
        mine = [e for e in expected if e.api_key_id == key_id]
        stt = [e for e in mine if not e.line_item.endswith("aura-2")]
        hours = (sum(e.duration for e in stt) / 3600).quantize(TEN_PLACES, rounding=ROUND_HALF_EVEN)
        total = (sum(e.total_audio for e in stt) / 3600).quantize(TEN_PLACES, rounding=ROUND_HALF_EVEN)
        got_row = (row["requests"], row["hours"], row["total_hours"], row["tts_characters"])
        assert got_row == (len(mine), hours, total, sum(e.characters or 0 for e in mine)), (key_id, row)

    # ---- the balance is debited by exactly the billed amount (docs/dgemu.md: 200.00 − Σ usd)
    balance = dec_json(owner.get(f"/v1/projects/{pid}/balances"))["balances"][0]
    assert Decimal(str(balance["amount"])) == Decimal("200") - sum(e.usd for e in expected)


def test_injected_records_are_priced_like_live_ones(dgemu, owner) -> None:
    """Bulk injection creates records "exactly as the data plane would" (PRODUCT §11): cost from the table."""
    pid = dgemu.project_id
    k = spec.create_key(owner, pid, ["usage:write"])
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(microsecond=123456)
    rows = [
        ("listen", "sync", "nova-3", {"duration_seconds": 42.5}),
        ("listen", "streaming", "nova-2", {"duration_seconds": 3601}),
        ("speak", "sync", "aura-2-andromeda-en", {"characters": 1999}),
        ("listen", "async", "nova-3-medical", {"duration_seconds": 0.5}),
    ]
    records = [{"api_key_id": k["api_key_id"], "created": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "endpoint": ep, "method": m, "model": model,
                "request_id": f"00000000-0000-4000-8000-00000000000{i}",
                **q} for i, (ep, m, model, q) in enumerate(rows)]
    spec.inject(owner, pid, records)
    for rec_in in records:
        p = price_for(rec_in["endpoint"], rec_in["method"], rec_in["model"])
        if "characters" in rec_in:
            want = usd(p, characters=rec_in["characters"])
        else:
            want = usd(p, seconds=Decimal(str(rec_in["duration_seconds"])))
        rec = dec_json(owner.get(f"/v1/projects/{pid}/requests/{rec_in['request_id']}"))["request"]
        assert rec["api_key_id"] == k["api_key_id"]
        assert rec["created"] == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert rec["response"]["details"]["usd"] == want, (rec_in, rec)


def test_late_records_keep_their_time_and_cost(dgemu, owner) -> None:
    """``late_record_seconds`` (PRODUCT §10): the record of a call shows up late, but with the call's own
    ``created`` and cost; once visible it counts in the billing breakdown."""
    pid = dgemu.project_id
    k = spec.create_key(owner, pid, ["usage:write"])
    assert owner.post("/_emulator/faults", json={"late_record_seconds": 3}).status_code == 200
    try:
        audio = tone("0.5")
        rid = listen_rest(dgemu, k["key"], audio)
        t_call = time.monotonic()
        early = dec_json(owner.get(f"/v1/projects/{pid}/requests", params={"accessor": k["api_key_id"]}))
        assert early["requests"] == [], "the record must not be visible yet"
        spec.check_error(owner.get(f"/v1/projects/{pid}/requests/{rid}"), 404)
        deadline = t_call + 10
        while time.monotonic() < deadline:
            resp = owner.get(f"/v1/projects/{pid}/requests/{rid}")
            if resp.status_code == 200:
                break
            time.sleep(0.2)
        assert resp.status_code == 200, "the late record never appeared"
        assert time.monotonic() - t_call >= 2.0
        rec = dec_json(resp)["request"]
    finally:
        assert owner.post("/_emulator/faults", json={"late_record_seconds": 0}).status_code == 200
    made = dt.datetime.fromisoformat(rec["created"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - made).total_seconds()) < 30
    assert (dt.datetime.now(dt.UTC) - made).total_seconds() >= 2.5, "created is the call's time, not arrival"
    want = usd(price_for("listen", "sync", "nova-3"), seconds=audio.duration)
    assert rec["api_key_id"] == k["api_key_id"] and rec["response"]["details"]["usd"] == want
    today = str(dt.datetime.now(dt.UTC).date())
    bill = dec_json(owner.get(f"/v1/projects/{pid}/billing/breakdown",
                              params={"start": today, "end": today, "accessor": k["api_key_id"]}))
    assert sum(r["dollars"] for r in bill["results"]) == want


def test_concurrent_calls_are_all_recorded_once(dgemu, owner) -> None:
    """40 listen calls from 8 threads and 4 keys (plus 4 live streams): one record each, exact totals."""
    from concurrent.futures import ThreadPoolExecutor

    pid = dgemu.project_id
    keys = [spec.create_key(owner, pid, ["usage:write"]) for _ in range(4)]
    audio = tone("0.4")
    live = tone("0.3")

    def rest(i: int) -> tuple[str, str]:
        k = keys[i % 4]
        return k["api_key_id"], listen_rest(dgemu, k["key"], audio)

    def stream(i: int) -> tuple[str, str]:
        k = keys[i]
        return k["api_key_id"], listen_ws(dgemu, k["key"], live, keepalives=0)

    with ThreadPoolExecutor(8) as pool:
        rest_calls = list(pool.map(rest, range(40)))
        ws_calls = list(pool.map(stream, range(4)))
    ids = [rid for _, rid in rest_calls + ws_calls]
    assert len(set(ids)) == 44
    page = dec_json(owner.get(f"/v1/projects/{pid}/requests", params={"limit": 1000}))
    assert sorted(r["request_id"] for r in page["requests"]) == sorted(ids)
    by_id = {r["request_id"]: r for r in page["requests"]}
    for key_id, rid in rest_calls + ws_calls:
        assert by_id[rid]["api_key_id"] == key_id
    sync3, stream3 = price_for("listen", "sync", "nova-3"), price_for("listen", "streaming", "nova-3")
    want = 40 * usd(sync3, seconds=audio.duration) + 4 * usd(stream3, seconds=live.duration)
    today = str(dt.datetime.now(dt.UTC).date())
    bill = dec_json(owner.get(f"/v1/projects/{pid}/billing/breakdown", params={"start": today, "end": today}))
    assert sum(r["dollars"] for r in bill["results"]) == want


def test_failed_and_rejected_calls_are_not_billed(dgemu, owner) -> None:
    """docs/dgemu.md: a call that passed authentication but failed validation is logged as failed (code,
    ``response.message``, no ``details``) and not billed; 401/403 and faulted calls leave no record."""
    pid = dgemu.project_id
    k = spec.create_key(owner, pid, ["usage:write"])
    def listen(key: str, content: bytes) -> httpx.Response:
        return httpx.post(f"{dgemu.base_url}/v1/listen", params={"model": "nova-3"}, content=content,
                          headers={"Authorization": f"Token {key}", "Content-Type": "audio/wav"}, timeout=30)

    bad = listen(k["key"], b"not audio")
    spec.check_error(bad, 400)
    rid = bad.json()["request_id"]
    long_text = httpx.post(f"{dgemu.base_url}/v1/speak", json={"text": "x" * 2001}, timeout=30,
                           headers={"Authorization": f"Token {k['key']}"})
    spec.check_error(long_text, 413)
    spec.check_error(listen("nope", tone("0.5").wav()), 401)
    keys_only = spec.create_key(owner, pid, ["keys:read"])
    spec.check_error(listen(keys_only["key"], tone("0.5").wav()), 403)
    assert owner.post("/_emulator/faults", json={"rate_limit_rate": 1.0}).status_code == 200
    try:
        spec.check_error(listen(k["key"], tone("0.5").wav()), 429)
    finally:
        assert owner.post("/_emulator/faults", json={"rate_limit_rate": 0.0}).status_code == 200

    failed = dec_json(owner.get(f"/v1/projects/{pid}/requests", params={"status": "failed"}))["requests"]
    assert sorted(r["code"] for r in failed) == [400, 413]
    rec = next(r for r in failed if r["request_id"] == rid)
    assert rec["api_key_id"] == k["api_key_id"] and rec["response"]["code"] == 400
    assert "details" not in rec["response"] and rec["response"]["message"]
    succeeded = dec_json(owner.get(f"/v1/projects/{pid}/requests", params={"status": "succeeded"}))
    assert succeeded["requests"] == []
    today = str(dt.datetime.now(dt.UTC).date())
    day = {"start": today, "end": today}
    bill = dec_json(owner.get(f"/v1/projects/{pid}/billing/breakdown", params=day))
    assert bill["results"] == []
    usage = dec_json(owner.get(f"/v1/projects/{pid}/usage/breakdown", params={"start": today, "end": today}))
    assert sum(r["requests"] for r in usage["results"]) == 0
    balance = dec_json(owner.get(f"/v1/projects/{pid}/balances"))["balances"][0]
    assert balance["amount"] == 200


def test_injection_is_all_or_nothing(dgemu, owner) -> None:
    """docs/dgemu.md: a repeated ``request_id`` → 409 DUPLICATE_REQUEST_ID, an invalid item → 400; in both
    cases nothing of the batch is created."""
    pid = dgemu.project_id
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rid = "11111111-2222-4333-8444-555555555555"

    def rec(**kw) -> dict:
        return {"api_key_id": "some-key", "created": when, "endpoint": "listen", "method": "sync",
                "model": "nova-3", "duration_seconds": 3, **kw}

    url = f"/_emulator/projects/{pid}/requests"
    dup = owner.post(url, json={"requests": [rec(request_id=rid), rec(), rec(request_id=rid)]})
    assert dup.status_code == 409 and dup.json()["err_code"] == "DUPLICATE_REQUEST_ID", dup.text
    bad = owner.post(url, json={"requests": [rec(), rec(model="no-such-model")]})
    assert bad.status_code == 400 and "requests[1]" in bad.text, bad.text
    assert dec_json(owner.get(f"/v1/projects/{pid}/requests"))["requests"] == []
    spec.inject(owner, pid, [rec(request_id=rid)])
    again = owner.post(url, json={"requests": [rec(request_id=rid)]})
    assert again.status_code == 409, again.text
    page = dec_json(owner.get(f"/v1/projects/{pid}/requests"))["requests"]
    assert [r["request_id"] for r in page] == [rid]
    assert page[0]["api_key_id"] == "some-key"  # unknown keys are how unattributed usage is simulated
