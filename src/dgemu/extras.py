"""``/_emulator`` extras: health, reset, projects, bulk request injection, faults."""

from __future__ import annotations

import random
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from . import errors, timeutil
from .common import (
    ENUMS,
    Emulator,
    parse_json_body,
    quantize_duration,
    require_owner,
    tts_duration,
)
from .prices import DEFAULT_MODELS, UnknownModel
from .store import Faults, Record

MAX_BATCH = 100_000
MAX_SECONDS = 10_000_000
MAX_COUNT = 1_000_000_000


async def health(emu: Emulator, request: Request) -> Any:
    return {"status": "ok"}


async def reset(emu: Emulator, request: Request) -> Any:
    require_owner(emu.store, request.headers)
    emu.store.reset()
    emu.fault_rng = random.Random(emu.store.seed)
    return {"status": "ok", "project_id": emu.store.initial_project_id}


async def create_project(emu: Emulator, request: Request) -> Any:
    require_owner(emu.store, request.headers)
    doc = parse_json_body(await request.body(), allow_empty=True)
    if not isinstance(doc, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    name = doc.get("name", "dgemu project")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise errors.bad_request("'name' must be a non-empty string.")
    p, key = emu.store.create_project(name)
    return {
        "project_id": p.project_id,
        "owner_key": key.secret,
        "owner_api_key_id": key.api_key_id,
        "name": p.name,
    }


def _fail(i: int, msg: str) -> errors.DgError:
    return errors.bad_request(f"requests[{i}]: {msg}")


def _parse_created(value: Any, i: int) -> int:
    if not isinstance(value, str):
        raise _fail(i, "'created' must be an ISO 8601 date-time string")
    try:
        return timeutil.to_us(timeutil.parse_datetime(value))
    except (ValueError, OverflowError):
        raise _fail(i, "'created' must be an ISO 8601 date-time string") from None


def _nonneg_int(item: dict, name: str, i: int, default: int | None = None) -> int:
    v = item.get(name, default)
    if v is None:
        raise _fail(i, f"'{name}' is required")
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)) or not 0 <= v <= MAX_COUNT or v != int(v):
        raise _fail(i, f"'{name}' must be a whole number between 0 and {MAX_COUNT}")
    return int(v)


def _str_tuple(item: dict, name: str, i: int) -> tuple[str, ...]:
    v = item.get(name)
    if v is None:
        return ()
    if v.__class__ is list and all(t.__class__ is str for t in v):
        return tuple(v)
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise _fail(i, f"'{name}' must be a list of strings")
    return tuple(v)


async def inject_requests(emu: Emulator, request: Request) -> Any:
    require_owner(emu.store, request.headers)
    store = emu.store
    pid = request.path_params["project_id"]
    try:
        pid = str(uuid.UUID(pid))
    except ValueError:
        raise errors.project_not_found() from None
    project = store.projects.get(pid)
    if project is None or project.deleted:
        raise errors.project_not_found()
    doc = parse_json_body(await request.body())
    items = doc.get("requests") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise errors.bad_request('Expected {"requests": [...]}.')
    if len(items) > MAX_BATCH:
        raise errors.bad_request(f"At most {MAX_BATCH} requests per call.")
    records: list[Record] = []
    seen: set[str] = set()
    row_cache: dict[tuple[str, str, str], Any] = {}
    prices = store.prices
    cost = prices.cost
    existing = project.log.by_id
    now = timeutil.now_us()
    visible = now + int(store.faults.late_record_seconds * 1_000_000)
    fresh_ids = store.new_uuids(sum(1 for it in items if isinstance(it, dict) and "request_id" not in it))
    fresh_pos = 0
    parse_dt = timeutil.parse_datetime
    to_us = timeutil.to_us
    zero = Decimal(0)
    num = (int, Decimal)
    # one object per repeated value keeps a million records compact
    si = sys.intern
    tuples = store.interned
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail(i, "must be an object")
        get = item.get
        key_id = get("api_key_id")
        if not isinstance(key_id, str) or not key_id:
            raise _fail(i, "'api_key_id' must be a non-empty string")
        created = get("created")
        try:
            created_us = to_us(parse_dt(created))
        except (ValueError, OverflowError, TypeError, AttributeError):
            raise _fail(i, "'created' must be an ISO 8601 date-time string") from None
        endpoint = get("endpoint")
        method = get("method") or ("streaming" if endpoint == "agent" else "sync")
        model = get("model") or DEFAULT_MODELS.get(endpoint, "")
        ck = (endpoint, method, model)
        row = row_cache.get(ck)
        if row is None:
            if endpoint not in ENUMS["endpoint"]:
                raise _fail(i, "'endpoint' must be one of listen, speak, read, agent")
            if method not in ENUMS["method"]:
                raise _fail(i, "'method' must be one of sync, async, streaming")
            if not isinstance(model, str):
                raise _fail(i, "'model' must be a string")
            try:
                row = row_cache[ck] = prices.row_for(endpoint, method, model)
            except UnknownModel as exc:
                raise _fail(i, str(exc)) from None
        code = get("code", 200)
        if code != 200:
            code = _nonneg_int(item, "code", i, 200)
            if not 100 <= code <= 599:
                raise _fail(i, "'code' must be an HTTP status")
        channels = get("channels", 1)
        if channels != 1:
            channels = _nonneg_int(item, "channels", i, 1)
            if channels < 1:
                raise _fail(i, "'channels' must be at least 1")
        multichannel = get("multichannel", channels > 1)
        if not isinstance(multichannel, bool):
            raise _fail(i, "'multichannel' must be a boolean")
        characters = tokens_in = tokens_out = 0
        if endpoint == "listen" or endpoint == "agent":
            d = get("duration_seconds")
            if d.__class__ not in num or not 0 <= d <= MAX_SECONDS:
                raise _fail(i, f"'duration_seconds' must be a number between 0 and {MAX_SECONDS}")
            duration = quantize_duration(d if d.__class__ is Decimal else Decimal(d))
            total = duration * channels if multichannel and endpoint == "listen" else duration
        elif endpoint == "speak":
            characters = _nonneg_int(item, "characters", i)
            duration = tts_duration(characters)
            total = zero
        else:
            duration = total = zero
            tokens_in = _nonneg_int(item, "tokens_in", i)
            tokens_out = _nonneg_int(item, "tokens_out", i, 0)
        rid = get("request_id")
        if rid is None:
            rid = fresh_ids[fresh_pos]
            fresh_pos += 1
        elif not isinstance(rid, str) or not rid or len(rid) > 128:
            raise _fail(i, "'request_id' must be a non-empty string")
        elif rid in seen or rid in existing:
            raise errors.legacy(
                409, "DUPLICATE_REQUEST_ID", f"requests[{i}]: request_id {rid!r} already exists."
            )
        else:
            seen.add(rid)
        config = get("config")
        if config is not None and not isinstance(config, dict):
            raise _fail(i, "'config' must be an object")
        deployment = get("deployment", "hosted")
        if deployment != "hosted" and deployment not in ENUMS["deployment"]:
            raise _fail(i, "'deployment' must be one of hosted, beta, self-hosted")
        path = get("path")
        if not isinstance(path, str):
            path = f"/v1/{endpoint}"
        ok = code < 300
        usd = (
            cost(row, seconds=total, characters=characters, tokens_in=tokens_in, tokens_out=tokens_out)
            if ok
            else zero
        )
        records.append(
            Record(
                rid,
                created_us,
                si(key_id),
                si(path),
                code,
                si(deployment),
                si(endpoint),
                si(method),
                si(model),
                row.line_item if ok else None,
                duration,
                total,
                channels,
                1,
                characters,
                tokens_in,
                tokens_out,
                usd,
                () if get("tags") is None else tuples.setdefault(t := _str_tuple(item, "tags", i), t),
                () if get("features") is None else tuples.setdefault(t := _str_tuple(item, "features", i), t),
                config,
                created_us,
                visible,
                None if ok else "injected failure",
            )
        )
    store.add_records(project, records)
    return {"created": len(records)}


_FAULT_FIELDS = {
    "error_rate": (0.0, 1.0),
    "rate_limit_rate": (0.0, 1.0),
    "retry_after_seconds": (0.0, 3600.0),
    "latency_ms": (0.0, 60_000.0),
    "late_record_seconds": (0.0, 86_400.0 * 30),
}


async def get_faults(emu: Emulator, request: Request) -> Any:
    return emu.store.faults.to_dict()


async def set_faults(emu: Emulator, request: Request) -> Any:
    require_owner(emu.store, request.headers)
    doc = parse_json_body(await request.body(), allow_empty=True)
    if not isinstance(doc, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    unknown = [k for k in doc if k not in _FAULT_FIELDS and k != "seed"]
    if unknown:
        raise errors.bad_request(f"Unknown fault fields: {', '.join(map(str, unknown))[:200]}")
    cur = emu.store.faults
    new = Faults(**cur.to_dict())
    for name, (lo, hi) in _FAULT_FIELDS.items():
        if name in doc:
            v = doc[name]
            if isinstance(v, bool) or not isinstance(v, (int, Decimal)) or not lo <= v <= hi:
                raise errors.bad_request(f"'{name}' must be a number between {lo:g} and {hi:g}.")
            setattr(new, name, float(v))
    if "seed" in doc:
        seed = doc["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise errors.bad_request("'seed' must be an integer or null.")
        new.seed = seed
    with emu.store.lock:
        emu.store.faults = new
        if "seed" in doc:
            emu.fault_rng = random.Random(new.seed)
        emu.store.touch()
    return new.to_dict()


async def clock(emu: Emulator, request: Request) -> Any:
    return {"now": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
