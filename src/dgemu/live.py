"""Live transcription over WebSocket (``/v1/listen``): Results per interval of audio received, KeepAlive,
Finalize, CloseStream → final Results + one Metadata summary, idle timeout → close 1011 (NET-0001)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from decimal import Decimal
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import audio, errors, timeutil
from .common import (
    Emulator,
    authenticate_credential,
    features_and_config,
    int_query,
    make_record,
    model_info,
    model_uuid,
    parse_authorization,
    require,
)
from .jsonout import dumps
from .prices import DEFAULT_MODELS, UnknownModel

MAX_CHANNELS = 20


class _WavStream:
    """Incremental WAV header parser for containerized streams."""

    def __init__(self) -> None:
        self.buf = b""
        self.fmt: tuple[int, int, int] | None = None  # channels, rate, block_align

    def feed(self, data: bytes) -> bytes | None:
        """Returns audio payload once the header is complete (b"" possible), None while incomplete."""
        self.buf += data
        b = self.buf
        if len(b) >= 12 and (b[:4] not in (b"RIFF", b"RIFX") or b[8:12] != b"WAVE"):
            raise audio.AudioError("not a WAV stream")
        if len(b) > 1 << 20:
            raise audio.AudioError("WAV header too large")
        pos = 12
        while pos + 8 <= len(b):
            cid = b[pos : pos + 4]
            size = struct.unpack_from("<I", b, pos + 4)[0]
            body = pos + 8
            if cid == b"data":
                if self.fmt is None:
                    raise audio.AudioError("data chunk before fmt chunk")
                payload = b[body:]
                self.buf = b""
                return payload
            if body + size > len(b):
                return None
            if cid == b"fmt ":
                if size < 16:
                    raise audio.AudioError("invalid fmt chunk")
                _tag, ch, rate, _br, align, _bits = struct.unpack_from("<HHIIHH", b, body)
                if ch < 1 or rate < 1 or align < 1 or ch > MAX_CHANNELS:
                    raise audio.AudioError("invalid fmt chunk")
                self.fmt = (ch, rate, align)
            pos = body + size + (size & 1)
        return None


class Session:
    def __init__(self, emu: Emulator, ws: WebSocket, principal, project, row, model: str, q: Any):
        self.emu = emu
        self.ws = ws
        self.principal = principal
        self.project = project
        self.row = row
        self.model = model
        self.q = q
        self.request_id = emu.store.new_uuid()
        self.created_us = timeutil.now_us()
        self.sha = hashlib.sha256()
        self.multichannel = (q.get("multichannel") or "").lower() == "true"
        self.encoding = (q.get("encoding") or "").lower() or None
        self.wav: _WavStream | None = None
        self.channels = 1
        self.rate = 0
        self.block = 0
        if self.encoding:
            self.rate = int_query(q, "sample_rate", None, 1, 384000) or 0
            self.channels = int_query(q, "channels", 1, 1, MAX_CHANNELS) or 1
            self.block = audio.BYTES_PER_SAMPLE[self.encoding] * self.channels
        else:
            self.wav = _WavStream()
        self.frames_total = 0  # frames received
        self.frames_emitted = 0  # frames covered by Results already sent
        self.pending = b""  # partial frame bytes
        self.muid = model_uuid(model)
        self.recorded = False

    # ------------------------------------------------------------------ output
    async def send(self, obj: dict) -> None:
        await self.ws.send_text(dumps(obj))

    def _seconds(self, frames: int) -> Decimal:
        return audio.seconds(frames, self.rate) if self.rate else Decimal(0)

    async def emit(self, frames: int, *, from_finalize: bool = False, speech_final: bool = False) -> None:
        start_s = float(self._seconds(self.frames_emitted))
        dur_s = float(self._seconds(self.frames_emitted + frames)) - start_s
        n = self.channels if self.multichannel else 1
        for c in range(n):
            words = audio.fake_words(
                f"{self.request_id}:{c}:{self.frames_emitted}".encode(), start_s, start_s + dur_s
            )
            msg = {
                "type": "Results",
                "channel_index": [c, n],
                "duration": round(dur_s, 6),
                "start": round(start_s, 6),
                "is_final": True,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": audio.transcript_of(words),
                            "confidence": 0.98 if words else 0.0,
                            "words": words,
                        }
                    ]
                },
                "metadata": {
                    "request_id": self.request_id,
                    "model_info": model_info(self.model, self.row.family),
                    "model_uuid": self.muid,
                },
            }
            await self.send(msg)
        self.frames_emitted += frames

    # ------------------------------------------------------------------ input
    async def audio_in(self, data: bytes) -> None:
        self.sha.update(data)
        if self.wav is not None:
            payload = self.wav.feed(data)
            if payload is None:
                return
            if self.wav.fmt is not None and not self.rate:
                self.channels, self.rate, self.block = self.wav.fmt
            self.wav = None
            data = payload
        buf = self.pending + data
        frames = len(buf) // self.block
        self.pending = buf[frames * self.block :]
        self.frames_total += frames
        interval = max(1, int(self.rate * self.emu.settings.ws_results_interval))
        while self.frames_total - self.frames_emitted >= interval:
            await self.emit(interval)

    async def flush(self, *, from_finalize: bool, always: bool) -> None:
        left = self.frames_total - self.frames_emitted
        if left > 0 or always:
            await self.emit(left, from_finalize=from_finalize, speech_final=True)

    def duration(self) -> Decimal:
        return self._seconds(self.frames_total)

    def record(self) -> None:
        if self.recorded:
            return
        self.recorded = True
        features, config = features_and_config(self.q, exclude=("tag",))
        config.setdefault("model", self.model)
        config.setdefault("language", "en")
        tags = tuple(t for t in self.q.getlist("tag") if t)
        rec = make_record(
            self.emu.store,
            request_id=self.request_id,
            created_us=self.created_us,
            api_key_id=self.principal.key.api_key_id,
            path="/v1/listen",
            endpoint="listen",
            method="streaming",
            model=self.model,
            row=self.row,
            duration=self.duration(),
            channels=self.channels,
            multichannel=self.multichannel,
            tags=tags,
            features=features,
            config=config,
        )
        self.emu.store.add_records(self.project, [rec])

    def metadata(self) -> dict:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha.hexdigest(),
            "created": timeutil.iso(self.created_us),
            "duration": self.duration(),
            "channels": self.channels,
            "models": [self.muid],
            "model_info": {self.muid: model_info(self.model, self.row.family)},
        }

    async def error(self, description: str, code: str = "INVALID_CLIENT_MESSAGE") -> None:
        await self.send(
            {
                "type": "Error",
                "variant": "SchemaError",
                "description": description,
                "message": description,
                "code": code,
            }
        )

    async def run(self) -> None:
        idle = self.emu.settings.ws_idle_timeout
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), timeout=idle)
            except TimeoutError:
                self.record()
                await self.ws.close(code=1011, reason="NET-0001: no audio received within the timeout window")
                return
            if msg["type"] == "websocket.disconnect":
                self.record()
                return
            data = msg.get("bytes")
            if data is not None:
                if len(data) == 0:  # legacy: an empty binary frame means CloseStream
                    await self.close_stream()
                    return
                try:
                    await self.audio_in(data)
                except audio.AudioError as exc:
                    self.record()
                    await self.send(
                        {
                            "type": "Error",
                            "variant": "DataError",
                            "description": str(exc),
                            "message": str(exc),
                            "code": "DATA-0000",
                        }
                    )
                    await self.ws.close(code=1008, reason="DATA-0000: failed to process audio")
                    return
                continue
            text = msg.get("text") or ""
            try:
                obj = json.loads(text)
            except ValueError:
                await self.error("Could not parse the client message as JSON.")
                continue
            kind = obj.get("type") if isinstance(obj, dict) else None
            if kind == "KeepAlive":
                continue
            if kind == "Finalize":
                await self.flush(from_finalize=True, always=True)
                continue
            if kind == "CloseStream":
                await self.close_stream()
                return
            if kind == "Configure":
                await self.send(
                    {
                        "type": "ConfigureSuccess",
                        "request_id": self.request_id,
                        "keyterms": obj.get("keyterms") or [],
                    }
                )
                continue
            await self.error(f"Unknown client message type: {str(kind)[:64]!r}.")

    async def close_stream(self) -> None:
        await self.flush(from_finalize=False, always=True)
        self.record()
        await self.send(self.metadata())
        await self.ws.close(code=1000)


def make_endpoint(emu: Emulator):
    from .app import apply_faults, error_response

    async def deny(ws: WebSocket, err: errors.DgError) -> None:
        await ws.send_denial_response(error_response(err))

    async def endpoint(ws: WebSocket) -> None:
        try:
            await apply_faults(emu)
            subprotocol = None
            parsed = parse_authorization(ws.headers.get("authorization"))
            if parsed is None:
                protos = [
                    p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
                ]
                if len(protos) >= 2 and protos[0].lower() in ("token", "bearer"):
                    parsed = (protos[0].lower(), protos[1])
                    subprotocol = protos[0]
            if parsed is None:
                raise errors.invalid_auth()
            principal = authenticate_credential(emu.store, parsed[0], parsed[1], data_plane=True)
            require(principal, "usage:write")
            project = emu.store.projects.get(principal.key.project_id)
            if project is None or project.deleted:
                raise errors.invalid_auth()
            q = ws.query_params
            model = q.get("model") or DEFAULT_MODELS["listen"]
            try:
                row = emu.store.prices.row_for("listen", "streaming", model)
            except UnknownModel:
                raise errors.bad_request("No such model/language/tier combination found.") from None
            enc = (q.get("encoding") or "").lower()
            if enc and enc not in audio.BYTES_PER_SAMPLE:
                raise errors.bad_query(
                    f"dgemu decodes only {', '.join(audio.BYTES_PER_SAMPLE)} or WAV streams."
                )
            if enc and not q.get("sample_rate"):
                raise errors.bad_query("'sample_rate' is required when 'encoding' is set.")
            session = Session(emu, ws, principal, project, row, model, q)
        except errors.DgError as err:
            await deny(ws, err)
            return
        await ws.accept(subprotocol=subprotocol)
        try:
            await session.run()
        except WebSocketDisconnect:
            session.record()
        except Exception:
            session.record()
            try:
                await ws.close(code=1011, reason="NET-0000: internal error")
            except Exception:  # noqa: S110 - the socket may already be gone
                pass
            raise

    return endpoint
