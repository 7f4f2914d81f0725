"""Audio made in the tests: linear16 PCM and WAV files of an exactly known duration."""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Audio:
    pcm: bytes  # interleaved little-endian signed 16-bit samples
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> Decimal:
        """Seconds of media (per channel), exact."""
        return Decimal(self.frames) / Decimal(self.sample_rate)

    def wav(self) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(self.channels)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(self.pcm)
        return buf.getvalue()

    def chunks(self, seconds: float = 0.1) -> list[bytes]:
        """The PCM split into frame-aligned chunks of ``seconds`` of audio."""
        step = int(self.sample_rate * seconds) * self.channels * 2
        return [self.pcm[i:i + step] for i in range(0, len(self.pcm), step)]


def tone(seconds: str | Decimal, *, sample_rate: int = 16000, channels: int = 1, hz: float = 440.0) -> Audio:
    """A sine tone (one pitch per channel) of exactly ``seconds`` (a whole number of frames)."""
    frames_exact = Decimal(seconds) * sample_rate
    assert frames_exact == frames_exact.to_integral_value(), "duration must be a whole number of frames"
    frames = int(frames_exact)
    samples = []
    for i in range(frames):
        for ch in range(channels):
            samples.append(int(8000 * math.sin(2 * math.pi * hz * (ch + 1) * i / sample_rate)))
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    return Audio(pcm=pcm, sample_rate=sample_rate, channels=channels, frames=frames)
