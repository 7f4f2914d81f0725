"""Shared request plumbing: the emulator context, authentication, query parsing, request records."""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from starlette.datastructures import QueryParams

from . import auth, errors, timeutil
from .prices import PriceRow
from .store import Key, Project, Record, Store, derived_id

TTS_CHARS_PER_SECOND = 15
DURATION_PLACES = Decimal("0.000001")
# boolean request options that count as "features" (request record details.features, usage filters)
FEATURE_FLAGS = (
    "alternatives",
    "detect_entities",
    "detect_language",
    "diarize",
    "dictation",
    "filler_words",
    "intents",
    "measurements",
    "multichannel",
    "numerals",
    "paragraphs",
    "profanity_filter",
    "punctuate",
    "sentiment",
    "smart_format",
    "summarize",
    "topics",
    "utterances",
    "interim_results",
    "vad_events",
    "mip_opt_out",
)
VALUED_FEATURES = (
    "custom_intent",
    "custom_topic",
    "keyterm",
    "keywords",
    "redact",
    "replace",
    "search",
    "diarize_model",
    "callback",
    "utt_split",
    "extra",
)
USAGE_FILTER_FLAGS = (
    "alternatives",
    "callback",
    "callback_method",
    "channels",
    "custom_intent",
    "custom_intent_mode",
    "custom_topic",
    "custom_topic_mode",
    "detect_entities",
    "detect_language",
    "diarize",
    "dictation",
    "encoding",
    "extra",
    "filler_words",
    "intents",
    "keyterm",
    "keywords",
    "language",
    "measurements",
    "multichannel",
    "numerals",
    "paragraphs",
    "profanity_filter",
    "punctuate",
    "redact",
    "replace",
    "sample_rate",
    "search",
    "sentiment",
    "smart_format",
    "summarize",
    "topics",
    "utt_split",
    "utterances",
    "version",
)
ENUMS = {
    "deployment": ("hosted", "beta", "self-hosted"),
    "endpoint": ("listen", "read", "speak", "agent"),
    "method": ("sync", "async", "streaming"),
    "status": ("succeeded", "failed"),
}


@dataclass
class Settings:
    ws_idle_timeout: float = 10.0
    ws_results_interval: float = 1.0


class Emulator:
    def __init__(self, store: Store, settings: Settings | None = None):
        self.store = store
        self.settings = settings or Settings()
        self.fault_rng = random.Random(store.seed)


@dataclass(slots=True)
class Principal:
    key: Key
    via_token: bool

    @property
    def perms(self) -> frozenset[str]:
        return auth.expand(self.key.scopes)


# ---------------------------------------------------------------------------- auth


def parse_authorization(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    scheme, _, cred = value.strip().partition(" ")
    cred = cred.strip()
    if not cred:
        return None
    return scheme.lower(), cred


def authenticate_credential(store: Store, scheme: str, cred: str, *, data_plane: bool) -> Principal:
    now = timeutil.now_us()
    if scheme == "token":
        key = store.keys_by_secret.get(cred)
        if key is None or not key.usable(now):
            raise errors.invalid_auth()
        return Principal(key, False)
    if scheme == "bearer":
        tok = store.tokens.get(cred)
        if tok is None or tok.expires_us <= now:
            raise errors.invalid_auth()
        key = store.keys.get(tok.api_key_id)
        if key is None or not key.usable(now):
            raise errors.invalid_auth()
        if not data_plane:
            raise errors.forbidden()
        return Principal(key, True)
    raise errors.invalid_auth()


def authenticate(store: Store, headers: Any, *, data_plane: bool = False) -> Principal:
    parsed = parse_authorization(headers.get("authorization"))
    if parsed is None:
        raise errors.invalid_auth()
    return authenticate_credential(store, parsed[0], parsed[1], data_plane=data_plane)


def require(principal: Principal, *perms: str) -> None:
    """At least one of ``perms``."""
    have = principal.perms
    if not any(p in have for p in perms):
        raise errors.forbidden()


def project_for(store: Store, principal: Principal, project_id: str) -> Project:
    try:
        project_id = str(uuid.UUID(project_id))  # case-insensitive, like any UUID
    except ValueError:
        raise errors.text(404, f"UUID parsing failed: invalid project id {project_id[:64]!r}") from None
    p = store.projects.get(project_id)
    if p is None or p.deleted or principal.key.project_id != project_id:
        raise errors.project_not_found()
    return p


def require_owner(store: Store, headers: Any) -> Principal:
    """``/_emulator`` endpoints: a usable key with the ``owner`` role, of any project."""
    principal = authenticate(store, headers)
    if "owner" not in principal.key.scopes:
        raise errors.forbidden()
    return principal


# ---------------------------------------------------------------------------- query params


class Query:
    def __init__(self, params: QueryParams):
        self.params = params

    def get(self, name: str) -> str | None:
        values = self.params.getlist(name)
        return values[-1] if values else None

    def getlist(self, name: str) -> list[str]:
        return self.params.getlist(name)

    def number(self, name: str, default: int, lo: int, hi: int | None) -> int:
        raw = self.get(name)
        if raw is None or raw == "":
            return default
        try:
            d = Decimal(raw.strip())
        except InvalidOperation:
            raise errors.bad_query(f"Invalid value for '{name}': {raw[:40]!r} is not a number.") from None
        if not d.is_finite() or d != d.to_integral_value():
            raise errors.bad_query(f"Invalid value for '{name}': {raw[:40]!r} is not a whole number.")
        n = int(d) if d.adjusted() <= 15 else (hi or 10**15) + 1
        if n < lo or (hi is not None and n > hi) or n > 10**15:
            rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise errors.bad_query(f"Invalid value for '{name}': must be {rng}.")
        return n

    def enum(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None
        if raw not in ENUMS[name]:
            raise errors.bad_query(f"Invalid value for '{name}': expected one of {', '.join(ENUMS[name])}.")
        return raw

    def bound(self, name: str, *, end: bool) -> int | None:
        raw = self.get(name)
        if raw is None or raw == "":
            return None
        try:
            return timeutil.parse_bound(raw, end=end)
        except (ValueError, OverflowError):
            raise errors.bad_query(
                f"Invalid value for '{name}': {raw[:64]!r} is not a date or date-time."
            ) from None

    def boolean(self, name: str) -> bool | None:
        raw = self.get(name)
        if raw is None:
            return None
        low = raw.strip().lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise errors.bad_query(f"Invalid value for '{name}': expected true or false.")

    def range(self) -> tuple[int | None, int | None]:
        start = self.bound("start", end=False)
        end = self.bound("end", end=True)
        if start is not None and end is not None and start > end:
            raise errors.bad_query("Invalid value for 'start': must not be after 'end'.")
        return start, end


def features_and_config(params: QueryParams, exclude: tuple[str, ...] = ()) -> tuple[tuple[str, ...], dict]:
    config: dict[str, Any] = {}
    for k in params.keys():
        if k in exclude:
            continue
        vals = params.getlist(k)
        config[k] = vals if len(vals) > 1 else vals[0]
    feats = []
    for f in FEATURE_FLAGS:
        v = params.get(f)
        if v is not None and v.lower() == "true":
            feats.append(f)
    for f in VALUED_FEATURES:
        v = params.get(f)
        if v is not None and v.lower() not in ("false", ""):
            feats.append(f)
    return tuple(sorted(feats)), config


# ---------------------------------------------------------------------------- bodies


def int_query(params: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A whole-number query parameter in ``lo..hi`` (``default`` when absent or empty); 400 otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        d = Decimal(raw.strip())
        if not d.is_finite() or d != d.to_integral_value():
            raise ValueError
        if d.adjusted() > 15:
            raise ValueError
        n = int(d)
    except (ValueError, ArithmeticError):
        raise errors.bad_query(f"Invalid value for '{name}'.") from None
    if n < lo or n > hi:
        raise errors.bad_query(f"Invalid value for '{name}': must be between {lo} and {hi}.")
    return n


def parse_json_body(raw: bytes, *, allow_empty: bool = False) -> Any:
    if not raw.strip():
        if allow_empty:
            return {}
        raise errors.invalid_json("Json deserialize error: EOF while parsing a value at line 1 column 0")
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise errors.invalid_json(f"Json deserialize error: {str(exc)[:200]}") from None


# ---------------------------------------------------------------------------- records


def quantize_duration(value: Decimal) -> Decimal:
    return value.quantize(DURATION_PLACES, rounding=ROUND_HALF_EVEN)


def tts_duration(characters: int) -> Decimal:
    return quantize_duration(Decimal(characters) / TTS_CHARS_PER_SECOND)


def make_record(
    store: Store,
    *,
    request_id: str,
    created_us: int,
    api_key_id: str,
    path: str,
    endpoint: str,
    method: str,
    model: str,
    row: PriceRow | None,
    duration: Decimal = Decimal(0),
    channels: int = 1,
    multichannel: bool = False,
    characters: int = 0,
    tokens_in: int = 0,
    tokens_out: int = 0,
    tags: tuple[str, ...] = (),
    features: tuple[str, ...] = (),
    config: dict | None = None,
    code: int = 200,
    message: str | None = None,
    streams: int = 1,
    deployment: str = "hosted",
    completed_us: int | None = None,
) -> Record:
    now = timeutil.now_us()
    duration = quantize_duration(duration)
    if endpoint == "speak":
        total_audio = Decimal(0)
    elif endpoint == "listen" and multichannel:
        total_audio = duration * channels
    else:
        total_audio = duration
    usd = Decimal(0)
    line_item = None
    if code < 300 and row is not None:
        line_item = row.line_item
        usd = store.prices.cost(
            row, seconds=total_audio, characters=characters, tokens_in=tokens_in, tokens_out=tokens_out
        )
    late_us = int(store.faults.late_record_seconds * 1_000_000)
    return Record(
        request_id=request_id,
        created_us=created_us,
        api_key_id=api_key_id,
        path=path,
        code=code,
        deployment=deployment,
        endpoint=endpoint,
        method=method,
        model=model,
        line_item=line_item,
        duration=duration,
        total_audio=total_audio,
        channels=channels,
        streams=streams,
        characters=characters,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        usd=usd,
        tags=tags,
        features=features,
        config=config,
        completed_us=completed_us if completed_us is not None else now,
        visible_us=now + late_us,
        message=message,
    )


def model_uuid(model: str) -> str:
    return derived_id("model", model)


def model_info(model: str, family: str) -> dict:
    return {"name": model, "version": "2026-01-01.0", "arch": family}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0


__all__ = ["Emulator", "Principal", "Query", "Settings", "authenticate", "ceil_div", "make_record", "math"]
