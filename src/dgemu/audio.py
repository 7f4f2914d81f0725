"""Audio: duration from WAV headers or raw PCM, small synthetic WAV output and fake transcripts."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

DURATION_PLACES = Decimal("0.000001")
BYTES_PER_SAMPLE = {"linear16": 2, "linear32": 4, "mulaw": 1, "alaw": 1}
_WORDS = (
    "the",
    "emulated",
    "deepgram",
    "transcript",
    "keeps",
    "counting",
    "every",
    "second",
    "of",
    "audio",
    "billing",
    "ledger",
    "hello",
    "world",
    "today",
    "meeting",
    "notes",
    "customer",
    "call",
    "thanks",
)


class AudioError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AudioInfo:
    duration: Decimal  # seconds per channel, 6 decimal places
    channels: int
    sample_rate: int


def seconds(frames: int, rate: int) -> Decimal:
    return (Decimal(frames) / Decimal(rate)).quantize(DURATION_PLACES, rounding=ROUND_HALF_EVEN)


def parse_wav(data: bytes) -> AudioInfo:
    """RIFF/WAVE: read ``fmt `` (channels, rate, block align) and the ``data`` chunk size."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise AudioError("not a WAV file")
    pos = 12
    fmt = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioError("truncated fmt chunk")
            _tag, channels, rate, _byte_rate, block_align, _bits = struct.unpack_from("<HHIIHH", data, body)
            if channels < 1 or rate < 1 or block_align < 1:
                raise AudioError("invalid fmt chunk")
            fmt = (channels, rate, block_align)
        elif cid == b"data":
            if fmt is None:
                raise AudioError("data chunk before fmt chunk")
            channels, rate, block_align = fmt
            available = len(data) - body
            if size == 0xFFFFFFFF or size > available:  # streaming writers / truncated uploads
                size = available
            if size <= 0:
                raise AudioError("empty data chunk")
            return AudioInfo(seconds(size // block_align, rate), channels, rate)
        pos = body + size + (size & 1)
    raise AudioError("no data chunk")


def parse_raw(data: bytes, encoding: str, sample_rate: int, channels: int) -> AudioInfo:
    width = BYTES_PER_SAMPLE.get(encoding)
    if width is None:
        raise AudioError(f"unsupported raw encoding {encoding!r}")
    if sample_rate < 1 or channels < 1:
        raise AudioError("invalid sample_rate or channels")
    if not data:
        raise AudioError("empty audio")
    frames = len(data) // (width * channels)
    return AudioInfo(seconds(frames, sample_rate), channels, sample_rate)


def make_wav(duration_s: float, sample_rate: int = 24000, channels: int = 1, width: int = 2) -> bytes:
    frames = int(duration_s * sample_rate)
    size = frames * channels * width
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * width, channels * width, width * 8
    )
    return header + b"data" + struct.pack("<I", size) + bytes(size)


def fake_words(seed: bytes, start: float, end: float) -> list[dict]:
    """Deterministic words, one every 0.5 s, between ``start`` and ``end`` seconds."""
    words = []
    t = start
    i = 0
    digest = hashlib.sha256(seed).digest()
    while t + 0.5 <= end + 1e-9:
        w = _WORDS[(digest[i % len(digest)] + int(t * 2)) % len(_WORDS)]
        words.append(
            {
                "word": w,
                "start": round(t, 3),
                "end": round(t + 0.45, 3),
                "confidence": 0.98,
                "punctuated_word": w,
            }
        )
        t += 0.5
        i += 1
    return words


def transcript_of(words: list[dict]) -> str:
    return " ".join(w["word"] for w in words)
