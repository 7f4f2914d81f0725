"""Realistic demo traffic: a month of request records per customer profile (bulk-injected into dgemu
with their timestamps) plus a few live data-plane calls (REST listen and speak, a WebSocket stream)."""

from __future__ import annotations

import io
import json
import math
import random
import struct
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx


@dataclass(frozen=True)
class Profile:
    """How one key's traffic looks: calls per weekday, and the mix of what they are."""

    name: str
    calls_per_day: int
    mix: tuple[tuple[str, str, str, int], ...]  # (endpoint, method, model, weight)
    mean_seconds: int  # typical audio length of an STT call
    mean_characters: int  # typical TTS request


PROFILES: dict[str, Profile] = {
    "voice-agent": Profile(
        "voice agent (streaming STT + TTS)", 90,
        (("listen", "streaming", "nova-3", 6), ("speak", "sync", "aura-2-thalia-en", 5)),
        mean_seconds=140, mean_characters=220,
    ),
    "transcription": Profile(
        "batch transcription (pre-recorded STT)", 60,
        (("listen", "sync", "nova-3", 7), ("listen", "async", "nova-3", 2), ("listen", "sync", "nova-2", 1)),
        mean_seconds=900, mean_characters=0,
    ),
    "mixed": Profile(
        "mixed small app", 25,
        (
            ("listen", "sync", "nova-3", 3),
            ("listen", "streaming", "nova-3", 2),
            ("speak", "sync", "aura-2-thalia-en", 2),
        ),
        mean_seconds=60, mean_characters=400,
    ),
    "internal": Profile(
        "operator's own testing key (belongs to no customer)", 8,
        (("listen", "streaming", "nova-3", 1), ("speak", "sync", "aura-2-thalia-en", 1)),
        mean_seconds=45, mean_characters=120,
    ),
}

# Share of a day's calls per UTC hour: quiet at night, busy in office hours.
_HOURLY = [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1]


def month_of_records(
    api_key_id: str, profile: Profile, start: datetime, end: datetime, rng: random.Random
) -> list[dict]:
    """Injection records for one key between start and end (UTC), weekday-heavy and diurnal."""
    records: list[dict] = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    weights = [w for *_, w in profile.mix]
    while day < end:
        factor = 1.0 if day.weekday() < 5 else 0.35  # float-ok: traffic shape, not money
        calls = max(0, int(rng.gauss(profile.calls_per_day * factor, profile.calls_per_day * 0.15)))
        for _ in range(calls):
            hour = rng.choices(range(24), weights=_HOURLY)[0]
            at = day + timedelta(hours=hour, seconds=rng.randrange(3600), microseconds=rng.randrange(10**6))
            if not (start <= at < end):
                continue
            endpoint, method, model, _w = rng.choices(profile.mix, weights=weights)[0]
            rec = {"api_key_id": api_key_id, "created": at.isoformat().replace("+00:00", "Z"),
                   "endpoint": endpoint, "method": method, "model": model}
            if endpoint == "speak":
                rec["characters"] = max(20, int(rng.lognormvariate(math.log(profile.mean_characters), 0.6)))
            else:
                rec["duration_seconds"] = max(2, int(rng.lognormvariate(math.log(profile.mean_seconds), 0.8)))
            records.append(rec)
        day += timedelta(days=1)
    return records


def inject(base_url: str, project_id: str, owner_key: str, records: list[dict], batch: int = 5000) -> int:
    """Bulk-inject records into dgemu with their timestamps; returns how many it created."""
    created = 0
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Token {owner_key}"}, timeout=120) as c:
        for i in range(0, len(records), batch):
            r = c.post(f"/_emulator/projects/{project_id}/requests", json={"requests": records[i:i + batch]})
            r.raise_for_status()
            created += r.json()["created"]
    return created


def wav_bytes(seconds: int, sample_rate: int = 16000, channels: int = 1) -> bytes:
    """A WAV file of a soft tone (linear16), the kind of audio a client would upload."""
    frames = bytearray()
    for i in range(seconds * sample_rate):
        sample = int(3000 * math.sin(2 * math.pi * 440 * i / sample_rate))
        frames += struct.pack("<h", sample) * channels
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(bytes(frames))
    return buf.getvalue()


def live_calls(base_url: str, ws_url: str, secret: str) -> int:
    """Real data-plane calls with a customer's key: REST listen, speak, and a short live stream."""
    from websockets.sync.client import connect

    auth = {"Authorization": f"Token {secret}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=60) as c:
        c.post("/v1/listen", params={"model": "nova-3"}, content=wav_bytes(6),
               headers={"Content-Type": "audio/wav"}).raise_for_status()
        c.post("/v1/speak", params={"model": "aura-2-thalia-en"},
               json={"text": "Your order has shipped and will arrive on Tuesday."}).raise_for_status()
    url = f"{ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1"
    pcm = wav_bytes(4)[44:]
    with connect(url, additional_headers=auth) as ws:
        for i in range(0, len(pcm), 32000):
            ws.send(pcm[i:i + 32000])
        ws.send(json.dumps({"type": "CloseStream"}))
        for message in ws:
            if isinstance(message, str) and json.loads(message).get("type") == "Metadata":
                break
    return 3


def previous_month(now: datetime) -> tuple[datetime, datetime]:
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    prev = (first - timedelta(days=1)).replace(day=1)
    return prev, first
