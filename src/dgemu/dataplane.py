"""Data plane: POST /v1/listen, /v1/speak, /v1/read, /v1/auth/grant. Each call becomes a request record."""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import audio, auth, errors, timeutil
from .common import (
    Emulator,
    Principal,
    authenticate,
    ceil_div,
    features_and_config,
    int_query,
    make_record,
    model_info,
    model_uuid,
    parse_json_body,
    require,
)
from .prices import DEFAULT_MODELS, PriceRow, UnknownModel
from .store import Project, Token

MAX_SPEAK_CHARS = 2000
MAX_SPEAK_BODY = 2 * 1024 * 1024
MAX_LISTEN_CHANNELS = 20
MAX_GRANT_TTL = 3600
DEFAULT_GRANT_TTL = 30


def data_principal(emu: Emulator, request: Any) -> tuple[Principal, Project]:
    principal = authenticate(emu.store, request.headers, data_plane=True)
    require(principal, "usage:write")
    project = emu.store.projects.get(principal.key.project_id)
    if project is None or project.deleted:
        raise errors.invalid_auth()
    return principal, project


def _tags(request: Request) -> tuple[str, ...]:
    return tuple(t for t in request.query_params.getlist("tag") if t)


@dataclass(frozen=True)
class _Call:
    """One data-plane request: everything its request-log record shares, success or failure."""

    emu: Emulator
    project: Project
    principal: Principal
    request_id: str
    created_us: int
    path: str
    endpoint: str
    method: str
    model: str
    tags: tuple[str, ...]

    def record(self, row: PriceRow | None, **usage: Any) -> None:
        """Add this request's record to the request log (``usage``: the rest of ``make_record``)."""
        rec = make_record(
            self.emu.store,
            request_id=self.request_id,
            created_us=self.created_us,
            api_key_id=self.principal.key.api_key_id,
            path=self.path,
            endpoint=self.endpoint,
            method=self.method,
            model=self.model,
            row=row,
            tags=self.tags,
            **usage,
        )
        self.emu.store.add_records(self.project, [rec])

    def fail(self, err: errors.DgError) -> errors.DgError:
        """Record the failed call and return the error to raise (same request id)."""
        body = err.body if isinstance(err.body, dict) else {}
        msg = str(body.get("err_msg") or body.get("message") or err.body)
        self.record(None, code=err.status, message=msg)
        if isinstance(err.body, dict) and "request_id" in err.body:
            err.body["request_id"] = self.request_id
        err.request_id = self.request_id
        return err


def _price_row(emu: Emulator, endpoint: str, method: str, model: str) -> PriceRow:
    try:
        return emu.store.prices.row_for(endpoint, method, model)
    except UnknownModel:
        raise errors.bad_request("No such model/language/tier combination found.") from None


def _bool(request: Request, name: str) -> bool:
    v = request.query_params.get(name)
    return v is not None and v.strip().lower() == "true"


# ---------------------------------------------------------------------------- listen


def transcript_body(
    request_id: str,
    created_us: int,
    sha: str,
    info: audio.AudioInfo,
    model: str,
    family: str,
    multichannel: bool,
    tags: tuple[str, ...],
) -> dict:
    n = info.channels if multichannel else 1
    dur = float(info.duration)
    channels = []
    for c in range(n):
        words = audio.fake_words(f"{sha}:{c}".encode(), 0.0, dur)
        channels.append(
            {
                "alternatives": [
                    {
                        "transcript": audio.transcript_of(words),
                        "confidence": 0.98 if words else 0.0,
                        "words": words,
                    }
                ]
            }
        )
    muid = model_uuid(model)
    meta: dict[str, Any] = {
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha,
        "created": timeutil.iso(created_us),
        "duration": info.duration,
        "channels": n,
        "models": [muid],
        "model_info": {muid: model_info(model, family)},
    }
    if tags:
        meta["tags"] = list(tags)
    return {"metadata": meta, "results": {"channels": channels}}


async def listen(emu: Emulator, request: Request) -> Any:
    principal, project = data_principal(emu, request)
    created_us = timeutil.now_us()
    request_id = emu.store.new_uuid()
    q = request.query_params
    model = q.get("model") or DEFAULT_MODELS["listen"]
    method = "async" if q.get("callback") else "sync"
    tags = _tags(request)
    call = _Call(emu, project, principal, request_id, created_us, "/v1/listen", "listen", method, model, tags)

    try:
        row = _price_row(emu, "listen", method, model)
        multichannel = _bool(request, "multichannel")
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            doc = parse_json_body(body)
            if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
                raise errors.bad_request("Invalid JSON body: expected an object with a 'url' string.")
            raise errors.legacy(
                400,
                "REMOTE_CONTENT_ERROR",
                "dgemu is offline and cannot fetch remote media; send the audio bytes instead.",
            )
        encoding = q.get("encoding")
        if encoding and encoding.lower() in audio.BYTES_PER_SAMPLE:
            rate = int_query(q, "sample_rate", None, 1, 384000)
            if rate is None:
                raise errors.bad_query("'sample_rate' is required when 'encoding' is set.")
            ch = int_query(q, "channels", 1, 1, MAX_LISTEN_CHANNELS) or 1
            info = audio.parse_raw(body, encoding.lower(), rate, ch)
        else:
            info = audio.parse_wav(body)
        if info.channels > MAX_LISTEN_CHANNELS:
            raise errors.bad_request(f"Too many channels: at most {MAX_LISTEN_CHANNELS} are supported.")
    except audio.AudioError:
        raise call.fail(
            errors.bad_request("Bad Request: failed to process audio: corrupt or unsupported data")
        ) from None
    except errors.DgError as err:
        raise call.fail(err) from None
    sha = hashlib.sha256(body).hexdigest()
    features, config = features_and_config(q, exclude=("tag",))
    config.setdefault("model", model)
    config.setdefault("language", "en")
    call.record(
        row,
        duration=info.duration,
        channels=info.channels,
        multichannel=multichannel,
        features=features,
        config=config,
    )
    if method == "async":
        return {"request_id": request_id}
    return transcript_body(request_id, created_us, sha, info, model, row.family, multichannel, tags)


# ---------------------------------------------------------------------------- speak

SPEAK_ENCODINGS = {
    "linear16": ("audio/wav", 1),
    "mulaw": ("audio/wav", 7),
    "alaw": ("audio/wav", 6),
    "mp3": ("audio/mpeg", 0),
    "opus": ("audio/ogg", 0),
    "flac": ("audio/flac", 0),
    "aac": ("audio/aac", 0),
}


def speak_audio(
    duration: Decimal, encoding: str, container: str, sample_rate: int, bit_rate: int
) -> tuple[bytes, str]:
    secs = float(duration)
    if encoding in ("linear16", "mulaw", "alaw"):
        width = 2 if encoding == "linear16" else 1
        frames = int(secs * sample_rate)
        data = bytes(frames * width)
        if container == "none":
            return data, "application/octet-stream"
        fmt_tag = SPEAK_ENCODINGS[encoding][1]
        header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
        header += b"fmt " + struct.pack(
            "<IHHIIHH", 16, fmt_tag, 1, sample_rate, sample_rate * width, width, width * 8
        )
        return header + b"data" + struct.pack("<I", len(data)) + data, "audio/wav"
    size = max(64, int(secs * bit_rate / 8))
    prefix = {"mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "opus": b"OggS", "flac": b"fLaC", "aac": b"\xff\xf1"}
    head = prefix.get(encoding, b"")
    return head + bytes(size - len(head)), SPEAK_ENCODINGS[encoding][0]


async def speak(emu: Emulator, request: Request) -> Any:
    principal, project = data_principal(emu, request)
    created_us = timeutil.now_us()
    request_id = emu.store.new_uuid()
    q = request.query_params
    model = q.get("model") or DEFAULT_MODELS["speak"]
    tags = _tags(request)
    call = _Call(emu, project, principal, request_id, created_us, "/v1/speak", "speak", "sync", model, tags)
    try:
        row = _price_row(emu, "speak", "sync", model)
        encoding = (q.get("encoding") or "mp3").lower()
        if encoding not in SPEAK_ENCODINGS:
            raise errors.bad_query(
                f"Invalid value for 'encoding': expected one of {', '.join(SPEAK_ENCODINGS)}."
            )
        container = (
            q.get("container") or ("wav" if encoding in ("linear16", "mulaw", "alaw") else "none")
        ).lower()
        if container not in ("none", "wav", "ogg"):
            raise errors.bad_query("Invalid value for 'container': expected none, wav or ogg.")
        default_rate = {"mulaw": 8000, "alaw": 8000}.get(encoding, 24000)
        sample_rate = int_query(q, "sample_rate", default_rate, 8000, 48000) or default_rate
        bit_rate = int_query(q, "bit_rate", 48000, 8000, 320000) or 48000
        body = await request.body()
        if len(body) > MAX_SPEAK_BODY:
            raise errors.legacy(413, "PAYLOAD_TOO_LARGE", "Request body too large.")
        doc = parse_json_body(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise errors.bad_request("Invalid JSON body: expected an object with a 'text' string.")
        text = doc["text"]
        if not text.strip():
            raise errors.bad_request("'text' must not be empty.")
        if len(text) > MAX_SPEAK_CHARS:
            raise errors.legacy(
                413,
                "PAYLOAD_TOO_LARGE",
                f"Text is too long: {len(text)} characters, the limit is {MAX_SPEAK_CHARS}.",
            )
    except errors.DgError as err:
        raise call.fail(err) from None
    chars = len(text)
    from .common import tts_duration

    duration = tts_duration(chars)
    features, config = features_and_config(q, exclude=("tag",))
    config.setdefault("model", model)
    call.record(row, duration=duration, characters=chars, features=features, config=config)
    data, media_type = speak_audio(duration, encoding, container, sample_rate, bit_rate)
    headers = {
        "dg-request-id": request_id,
        "dg-char-count": str(chars),
        "dg-model-name": model,
        "dg-model-uuid": model_uuid(model),
        "dg-project-id": project.project_id,
    }
    return Response(data, media_type=media_type, headers=headers)


# ---------------------------------------------------------------------------- read


async def read(emu: Emulator, request: Request) -> Any:
    principal, project = data_principal(emu, request)
    created_us = timeutil.now_us()
    request_id = emu.store.new_uuid()
    q = request.query_params
    tags = _tags(request)
    model = "read"
    call = _Call(emu, project, principal, request_id, created_us, "/v1/read", "read", "sync", model, tags)
    try:
        row = _price_row(emu, "read", "sync", model)
        doc = parse_json_body(await request.body())
        if isinstance(doc, dict) and isinstance(doc.get("url"), str) and "text" not in doc:
            raise errors.legacy(
                400,
                "REMOTE_CONTENT_ERROR",
                "dgemu is offline and cannot fetch remote content; send the text instead.",
            )
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"].strip():
            raise errors.bad_request("Invalid JSON body: expected an object with a non-empty 'text' string.")
    except errors.DgError as err:
        raise call.fail(err) from None
    text = doc["text"]
    tokens_in_each = max(1, ceil_div(len(text), 4))
    meta: dict[str, Any] = {
        "request_id": request_id,
        "created": timeutil.iso(created_us),
        "language": q.get("language") or "en",
    }
    results: dict[str, Any] = {}
    total_in = total_out = 0
    muid = model_uuid("read")
    for feat, out_tokens in (("summarize", 32), ("topics", 8), ("intents", 8), ("sentiment", 4)):
        if not _bool(request, feat):
            continue
        total_in += tokens_in_each
        total_out += out_tokens
        info_key = {
            "summarize": "summary_info",
            "topics": "topics_info",
            "intents": "intents_info",
            "sentiment": "sentiment_info",
        }[feat]
        meta[info_key] = {"model_uuid": muid, "input_tokens": tokens_in_each, "output_tokens": out_tokens}
        if feat == "summarize":
            results["summary"] = {"results": {"summary": {"text": text[:120]}}}
        elif feat == "topics":
            results["topics"] = {"results": {"topics": {"segments": []}}}
        elif feat == "intents":
            results["intents"] = {"results": {"intents": {"segments": []}}}
        else:
            results["sentiments"] = {
                "segments": [],
                "average": {"sentiment": "neutral", "sentiment_score": 0.0},
            }
    features, config = features_and_config(q, exclude=("tag",))
    call.record(row, tokens_in=total_in, tokens_out=total_out, features=features, config=config)
    return {"metadata": {"metadata": meta}, "results": results}


# ---------------------------------------------------------------------------- grant


async def grant(emu: Emulator, request: Request) -> Any:
    principal = authenticate(emu.store, request.headers, data_plane=False)
    if auth.role_rank(principal.key.scopes) < 1:
        raise errors.forbidden()
    doc = parse_json_body(await request.body(), allow_empty=True)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    ttl = doc.get("ttl_seconds", DEFAULT_GRANT_TTL)
    if ttl is None:
        ttl = DEFAULT_GRANT_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, (int, Decimal)) or not (0 < ttl <= MAX_GRANT_TTL):
        raise errors.bad_request(f"'ttl_seconds' must be a number between 1 and {MAX_GRANT_TTL}.")
    token = "dgemu." + secrets.token_urlsafe(32)
    expires_us = timeutil.now_us() + int(Decimal(ttl) * 1_000_000)
    with emu.store.lock:
        emu.store.tokens[token] = Token(token, principal.key.api_key_id, principal.key.project_id, expires_us)
        now = timeutil.now_us()
        for t in [t for t in emu.store.tokens.values() if t.expires_us <= now]:
            emu.store.tokens.pop(t.token, None)
        emu.store.touch()
    return {"access_token": token, "expires_in": ttl}
