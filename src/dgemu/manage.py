"""Management API: projects, keys, members, requests, usage, billing, balances, purchases, models."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import auth, errors, timeutil
from .common import (
    USAGE_FILTER_FLAGS,
    Emulator,
    Query,
    authenticate,
    model_uuid,
    parse_json_body,
    project_for,
    require,
)
from .store import Key, Project, Record
from .timeutil import DAY_US

HOURS_PLACES = Decimal("1E-10")
MODEL_CATALOG = (
    # (name, family, kind, streaming, batch)
    ("nova-3", "nova-3", "stt", True, True),
    ("nova-3-medical", "nova-3", "stt", True, True),
    ("nova-2", "nova-2", "stt", True, True),
    ("nova", "nova", "stt", True, True),
    ("enhanced", "enhanced", "stt", True, True),
    ("base", "base", "stt", True, True),
    ("whisper-large", "whisper", "stt", False, True),
    ("flux-general-en", "flux", "stt", True, False),
    ("aura-2-thalia-en", "aura-2", "tts", True, True),
    ("aura-asteria-en", "aura", "tts", True, True),
)


def _ctx(emu: Emulator, request: Request, *perms: str):
    principal = authenticate(emu.store, request.headers)
    project = project_for(emu.store, principal, request.path_params["project_id"])
    if perms:
        require(principal, *perms)
    return principal, project


# ---------------------------------------------------------------------------- projects


async def list_projects(emu: Emulator, request: Request) -> Any:
    principal = authenticate(emu.store, request.headers)
    require(principal, "project:read")
    p = emu.store.projects.get(principal.key.project_id)
    projects = [] if p is None or p.deleted else [{"project_id": p.project_id, "name": p.name}]
    return {"projects": projects}


async def get_project(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "project:read")
    q = Query(request.query_params)
    q.number("limit", 10, 1, 1000)
    q.number("page", 0, 0, None)
    return {"project_id": p.project_id, "mip_opt_out": p.mip_opt_out, "name": p.name}


async def update_project(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "project:write")
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    name = body.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise errors.bad_request("'name' must be a non-empty string.")
        with emu.store.lock:
            p.name = name
            emu.store.touch()
    return {"message": "Successfully updated project info."}


async def delete_project(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "project:write:destroy")
    with emu.store.lock:
        p.deleted = True
        emu.store.touch()
    return {"message": "Project deleted."}


# ---------------------------------------------------------------------------- keys


def _member(emu: Emulator, p: Project, member_id: str) -> dict:
    return {"member_id": member_id, "email": p.owner_email}


def _key_view(k: Key, *, with_optional: bool) -> dict:
    out: dict[str, Any] = {"api_key_id": k.api_key_id, "comment": k.comment, "scopes": list(k.scopes)}
    if with_optional:
        if k.tags:
            out["tags"] = list(k.tags)
        if k.expiration_us is not None:
            out["expiration_date"] = timeutil.iso(k.expiration_us)
    out["created"] = timeutil.iso(k.created_us)
    return out


def _visible_keys(emu: Emulator, principal, p: Project) -> list[Key]:
    sees_all = {"members:read", "admins:read", "owners:read"} <= principal.perms
    keys = [k for k in emu.store.keys.values() if k.project_id == p.project_id and not k.deleted]
    if not sees_all:
        keys = [k for k in keys if k.member_id == principal.key.member_id]
    keys.sort(key=lambda k: (k.created_us, k.api_key_id))
    return keys


async def list_keys(emu: Emulator, request: Request) -> Any:
    principal, p = _ctx(emu, request, "keys:read")
    status = request.query_params.get("status")
    if status not in (None, "active", "expired"):
        raise errors.bad_query("Invalid value for 'status': expected active or expired.")
    now = timeutil.now_us()
    keys = _visible_keys(emu, principal, p)
    if status == "active":
        keys = [k for k in keys if not k.expired(now)]
    elif status == "expired":
        keys = [k for k in keys if k.expired(now)]
    return {
        "api_keys": [
            {"member": _member(emu, p, k.member_id), "api_key": _key_view(k, with_optional=True)}
            for k in keys
        ]
    }


def _find_key(emu: Emulator, principal, p: Project, key_id: str) -> Key:
    k = emu.store.keys.get(key_id)
    if k is None or k.deleted or k.project_id != p.project_id or k not in _visible_keys(emu, principal, p):
        raise errors.not_found("API key")
    return k


async def get_key(emu: Emulator, request: Request) -> Any:
    principal, p = _ctx(emu, request, "keys:read")
    k = _find_key(emu, principal, p, request.path_params["key_id"])
    member = {
        "member_id": k.member_id,
        "email": p.owner_email,
        "first_name": "Emulated",
        "last_name": "Owner",
        "api_key": _key_view(k, with_optional=True),
    }
    return {"item": {"member": member}}


def _string_list(body: dict, name: str, *, required: bool) -> list[str]:
    value = body.get(name)
    if value is None:
        if required:
            raise errors.bad_request(f"'{name}' is required.")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise errors.bad_request(f"'{name}' must be a list of non-empty strings.")
    if len(value) > 100 or any(len(v) > 256 for v in value):
        raise errors.bad_request(f"'{name}' is too long.")
    out: list[str] = []
    for v in value:
        if v not in out:
            out.append(v)
    return out


async def create_key(emu: Emulator, request: Request) -> Any:
    principal, p = _ctx(emu, request, "keys:write")
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise errors.bad_request("'comment' is required and must be a non-empty string.")
    if len(comment) > 1024:
        raise errors.bad_request("'comment' is too long.")
    scopes = _string_list(body, "scopes", required=True)
    if not scopes:
        raise errors.bad_request("'scopes' must not be empty.")
    unknown = auth.unknown_scopes(scopes)
    if unknown:
        raise errors.bad_request(f"Invalid scopes: {', '.join(unknown)[:200]}")
    tags = _string_list(body, "tags", required=False)
    exp_raw = body.get("expiration_date")
    ttl_raw = body.get("time_to_live_in_seconds")
    if exp_raw is not None and ttl_raw is not None:
        raise errors.bad_request("Only one of 'expiration_date' and 'time_to_live_in_seconds' may be given.")
    now = timeutil.now_us()
    expiration_us = None
    if exp_raw is not None:
        if not isinstance(exp_raw, str):
            raise errors.bad_request("'expiration_date' must be an ISO 8601 date-time string.")
        try:
            expiration_us = timeutil.parse_bound(exp_raw, end=False)
        except (ValueError, OverflowError):
            raise errors.bad_request("'expiration_date' must be an ISO 8601 date-time string.") from None
        if expiration_us <= now:
            raise errors.bad_request("'expiration_date' must be in the future.")
    if ttl_raw is not None:
        if (
            isinstance(ttl_raw, bool)
            or not isinstance(ttl_raw, (int, Decimal))
            or ttl_raw <= 0
            or ttl_raw > 10 * 365 * 86400 * 100
            or ttl_raw != int(ttl_raw)
        ):
            raise errors.bad_request("'time_to_live_in_seconds' must be a positive whole number.")
        expiration_us = now + int(ttl_raw) * 1_000_000
    # a key cannot grant permissions it does not have
    if not auth.expand(scopes) <= principal.perms:
        raise errors.forbidden()
    store = emu.store
    with store.lock:
        key = Key(
            api_key_id=store.new_uuid(),
            secret=store.new_secret(),
            project_id=p.project_id,
            member_id=principal.key.member_id,
            comment=comment,
            scopes=tuple(scopes),
            tags=tuple(tags),
            expiration_us=expiration_us,
            created_us=now,
            created_by=principal.key.api_key_id,
        )
        store.add_key(key)
    out: dict[str, Any] = {
        "api_key_id": key.api_key_id,
        "key": key.secret,
        "comment": key.comment,
        "scopes": list(key.scopes),
        "tags": list(key.tags),
    }
    if expiration_us is not None:
        out["expiration_date"] = timeutil.iso(expiration_us)
    out["created"] = timeutil.iso(now)
    return out


async def delete_key(emu: Emulator, request: Request) -> Any:
    principal, p = _ctx(emu, request, "keys:write")
    k = _find_key(emu, principal, p, request.path_params["key_id"])
    # admins may delete only keys they created (D: working-with-roles); owners and granular keys:write any
    caller_scopes = principal.key.scopes
    if (
        "owner" not in caller_scopes
        and "keys:write" not in caller_scopes
        and "admin" in caller_scopes
        and k.created_by != principal.key.api_key_id
        and k.api_key_id != principal.key.api_key_id
    ):
        raise errors.forbidden()
    with emu.store.lock:
        k.deleted = True
        emu.store.keys_by_secret.pop(k.secret, None)
        for t in [t for t in emu.store.tokens.values() if t.api_key_id == k.api_key_id]:
            emu.store.tokens.pop(t.token, None)
        emu.store.touch()
    return {"message": "Successfully deleted the API key."}


# ---------------------------------------------------------------------------- members


async def list_members(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "members:read")
    return {
        "members": [
            {
                "member_id": p.owner_member_id,
                "scopes": ["owner"],
                "email": p.owner_email,
                "first_name": "Emulated",
                "last_name": "Owner",
            }
        ]
    }


# ---------------------------------------------------------------------------- requests


async def list_requests(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "usage:read")
    q = Query(request.query_params)
    start, end = q.range()
    limit = q.number("limit", 10, 1, 1000)
    page = q.number("page", 0, 0, None)
    filters: dict[str, str] = {}
    accessor = q.get("accessor")
    if accessor is not None:
        filters["accessor"] = accessor
    for name in ("deployment", "endpoint", "method", "status"):
        v = q.enum(name)
        if v is not None:
            filters[name] = v
    now = timeutil.now_us()
    rid = q.get("request_id")
    with emu.store.lock:
        if rid is not None:
            r = p.log.by_id.get(rid)
            cands = [r] if r is not None and _matches(r, filters, start, end, now) else []
            rows = cands[page * limit : page * limit + limit]
        else:
            rows = p.log.page(filters, start, end, page, limit, now)
        pid = p.project_id
        out = b",".join(r.fragment or r.json_fragment(pid) for r in rows)
    # the records were serialized once when stored; a page only joins them
    return Response(
        b'{"page":%d,"limit":%d,"requests":[%s]}' % (page, limit, out), media_type="application/json"
    )


def _matches(r: Record, filters: dict[str, str], start: int | None, end: int | None, now: int) -> bool:
    if r.visible_us > now:
        return False
    if start is not None and r.created_us < start or end is not None and r.created_us > end:
        return False
    return all(getattr(r, f) == v for f, v in filters.items())


async def get_request(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "usage:read")
    r = p.log.by_id.get(request.path_params["request_id"])
    if r is None or r.visible_us > timeutil.now_us():
        raise errors.not_found("Request")
    return {"request": r.render(p.project_id)}


# ---------------------------------------------------------------------------- usage


def _model_names(value: str) -> set[str]:
    names = {value}
    for name, *_ in MODEL_CATALOG:
        from .common import model_uuid

        if model_uuid(name) == value:
            names.add(name)
    return names


# Aggregation rows: (day number, key, [usd, requests, duration, total_audio, characters, tok_in, tok_out]),
# key = (api_key_id, deployment, line_item, tags, endpoint, method, model, features) of succeeded records.
K_ACC, K_DEP, K_LI, K_TAGS, K_END, K_METH, K_MODEL, K_FEAT = range(8)


def _rows(p: Project, filters: dict[str, str], start: int | None, end: int | None, now: int):
    """Daily aggregates when the range is whole UTC days (the documented form), else record by record."""
    aligned = (start is None or start % DAY_US == 0) and (end is None or (end + 1) % DAY_US == 0)
    if aligned:
        yield from p.log.aggregates(start, end, now)
        return
    for r in p.log.scan(filters, start, end, now):
        if r.code < 300:
            k = (r.api_key_id, r.deployment, r.line_item, r.tags, r.endpoint, r.method, r.model, r.features)
            yield (
                r.created_us // DAY_US,
                k,
                [r.usd, 1, r.duration, r.total_audio, r.characters, r.tokens_in, r.tokens_out],
            )


def _key_filter(
    filters: dict[str, str],
    tag: str | None = None,
    models: set[str] | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    line_item: str | None = None,
) -> Callable[[tuple], bool]:
    checks = [
        (pos, filters[name])
        for name, pos in (("accessor", K_ACC), ("deployment", K_DEP), ("endpoint", K_END), ("method", K_METH))
        if name in filters
    ]
    if line_item is not None:
        checks.append((K_LI, line_item))

    def ok(k: tuple) -> bool:
        for pos, v in checks:
            if k[pos] != v:
                return False
        if tag is not None and tag not in k[K_TAGS]:
            return False
        if models is not None and k[K_MODEL] not in models:
            return False
        if include and not any(f in k[K_FEAT] for f in include):
            return False
        return not (exclude and any(f in k[K_FEAT] for f in exclude))

    return ok


def _usage_filter(q: Query) -> tuple[dict[str, str], Callable[[tuple], bool]]:
    filters: dict[str, str] = {}
    accessor = q.get("accessor")
    if accessor is not None:
        filters["accessor"] = accessor
    for name in ("deployment", "endpoint", "method"):
        v = q.enum(name)
        if v is not None:
            filters[name] = v
    tag = q.get("tag")
    model = q.get("model")
    models = _model_names(model) if model is not None else None
    include: list[str] = []
    exclude: list[str] = []
    for f in USAGE_FILTER_FLAGS:
        raw = q.get(f)
        if raw is None:
            continue
        if raw.lower() == "true":
            include.append(f)
        elif raw.lower() == "false":
            exclude.append(f)
        else:
            raise errors.bad_query(f"Invalid value for '{f}': expected true or false.")
    return filters, _key_filter(filters, tag, models, include, exclude)


def _resolve_days(p: Project, start: int | None, end: int | None, now: int) -> tuple[str, str]:
    end_day = timeutil.day_of(end) if end is not None else timeutil.day_of(now)
    if start is not None:
        start_day = timeutil.day_of(start)
    else:
        first = p.log.first_created(now)
        start_day = timeutil.day_of(first) if first is not None else end_day
        start_day = min(start_day, end_day)
    return start_day, end_day


class _Usage:
    __slots__ = ("hours_s", "total_s", "agent_s", "tokens_in", "tokens_out", "chars", "requests")

    def __init__(self) -> None:
        self.hours_s = Decimal(0)
        self.total_s = Decimal(0)
        self.agent_s = Decimal(0)
        self.tokens_in = 0
        self.tokens_out = 0
        self.chars = 0
        self.requests = 0

    def add(self, k: tuple, a: list) -> None:
        self.requests += a[1]
        endpoint = k[K_END]
        if endpoint == "listen":
            self.hours_s += a[2]
            self.total_s += a[3]
        elif endpoint == "agent":
            self.agent_s += a[3]
        elif endpoint == "speak":
            self.chars += a[4]
        elif endpoint == "read":
            self.tokens_in += a[5]
            self.tokens_out += a[6]

    def view(self) -> dict:
        return {
            "hours": _hours(self.hours_s),
            "total_hours": _hours(self.total_s),
            "agent_hours": _hours(self.agent_s),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tts_characters": self.chars,
            "requests": self.requests,
        }


def _hours(seconds: Decimal) -> Decimal:
    return (seconds / 3600).quantize(HOURS_PLACES, rounding=ROUND_HALF_EVEN)


def _usage_window(emu: Emulator, request: Request):
    _, p = _ctx(emu, request, "project:read", "usage:read")
    q = Query(request.query_params)
    start, end = q.range()
    filters, keep = _usage_filter(q)
    return p, q, start, end, filters, keep


RESOLUTION = {"units": "day", "amount": 1}


async def usage_summary(emu: Emulator, request: Request) -> Any:
    p, q, start, end, filters, keep = _usage_window(emu, request)
    now = timeutil.now_us()
    days: dict[int, _Usage] = {}
    with emu.store.lock:
        for dn, k, a in _rows(p, filters, start, end, now):
            if not keep(k):
                continue
            u = days.get(dn)
            if u is None:
                u = days[dn] = _Usage()
            u.add(k, a)
        start_day, end_day = _resolve_days(p, start, end, now)
    results = []
    for dn in sorted(days):
        d = timeutil.day_of(dn * DAY_US)
        v = days[dn].view()
        results.append(
            {
                "start": d,
                "end": d,
                "hours": v["hours"],
                "total_hours": v["total_hours"],
                "agent_hours": v["agent_hours"],
                "requests": v["requests"],
                "tokens": {"in": v["tokens_in"], "out": v["tokens_out"]},
                "tts_characters": v["tts_characters"],
            }
        )
    return {"start": start_day, "end": end_day, "resolution": RESOLUTION, "results": results}


USAGE_GROUPINGS = ("accessor", "endpoint", "feature_set", "models", "method", "tags", "deployment")
_USAGE_POS = {
    "accessor": K_ACC,
    "endpoint": K_END,
    "feature_set": K_FEAT,
    "models": K_MODEL,
    "method": K_METH,
    "tags": K_TAGS,
    "deployment": K_DEP,
}


def _sort_value(v: Any) -> str:
    return json.dumps(v, default=list)


async def usage_breakdown(emu: Emulator, request: Request) -> Any:
    p, q, start, end, filters, keep = _usage_window(emu, request)
    groupings = q.getlist("grouping")
    grouping = None
    if groupings:
        vals = {"models" if g == "model" else g for g in groupings}
        if len(vals) > 1:
            raise errors.bad_query("Invalid value for 'grouping': only one grouping is allowed.")
        grouping = vals.pop()
        if grouping not in USAGE_GROUPINGS:
            raise errors.bad_query(
                f"Invalid value for 'grouping': expected one of {', '.join(USAGE_GROUPINGS)}."
            )
    now = timeutil.now_us()
    pos = _USAGE_POS.get(grouping) if grouping else None
    rows: dict[tuple, _Usage] = {}
    with emu.store.lock:
        for dn, k, a in _rows(p, filters, start, end, now):
            if not keep(k):
                continue
            gk = (dn, k[pos] if pos is not None else None)
            u = rows.get(gk)
            if u is None:
                u = rows[gk] = _Usage()
            u.add(k, a)
        start_day, end_day = _resolve_days(p, start, end, now)
    results = []
    for dn, gv in sorted(rows, key=lambda gk: (gk[0], _sort_value(gk[1]))):
        day = timeutil.day_of(dn * DAY_US)
        g: dict[str, Any] = {
            "start": day,
            "end": day,
            "accessor": None,
            "endpoint": None,
            "feature_set": None,
            "models": [],
            "method": None,
            "tags": None,
            "deployment": None,
        }
        if grouping == "models":
            g["models"] = [gv]
        elif grouping == "tags":
            g["tags"] = list(gv)
        elif grouping == "feature_set":
            g["feature_set"] = ",".join(gv)
        elif grouping is not None:
            g[grouping] = gv
        results.append({**rows[(dn, gv)].view(), "grouping": g})
    return {"start": start_day, "end": end_day, "resolution": RESOLUTION, "results": results}


async def usage_fields(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "project:read", "usage:read")
    q = Query(request.query_params)
    start, end = q.range()
    now = timeutil.now_us()
    tags: set[str] = set()
    models: set[str] = set()
    methods: set[str] = set()
    features: set[str] = set()
    with emu.store.lock:
        for _dn, k, _a in _rows(p, {}, start, end, now):
            tags.update(k[K_TAGS])
            models.add(k[K_MODEL])
            methods.add(k[K_METH])
            features.update(k[K_FEAT])
    return {
        "tags": sorted(tags),
        "models": [
            {"name": m, "language": "en", "version": "2026-01-01.0", "model_id": model_uuid(m)}
            for m in sorted(models)
        ],
        "processing_methods": sorted(methods),
        "features": sorted(features),
        "languages": ["en"] if models else [],
    }


# ---------------------------------------------------------------------------- billing

BILLING_GROUPINGS = ("accessor", "deployment", "line_item", "tags")


def _billing_groupings(q: Query) -> list[str]:
    out: list[str] = []
    for raw in q.getlist("grouping"):
        raw = raw.strip()
        if raw.startswith("["):
            try:
                vals = json.loads(raw)
            except ValueError:
                raise errors.bad_query("Invalid value for 'grouping': not a JSON array.") from None
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                raise errors.bad_query("Invalid value for 'grouping': expected an array of strings.")
        else:
            vals = [v.strip() for v in raw.split(",") if v.strip()]
        for v in vals:
            if v not in BILLING_GROUPINGS:
                raise errors.bad_query(
                    f"Invalid value for 'grouping': expected {', '.join(BILLING_GROUPINGS)}."
                )
            if v not in out:
                out.append(v)
    return out


async def billing_breakdown(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "billing:read")
    q = Query(request.query_params)
    start, end = q.range()
    groupings = _billing_groupings(q)
    filters: dict[str, str] = {}
    accessor = q.get("accessor")
    if accessor is not None:
        filters["accessor"] = accessor
    dep = q.enum("deployment")
    if dep is not None:
        filters["deployment"] = dep
    keep = _key_filter(filters, tag=q.get("tag"), line_item=q.get("line_item"))
    positions = [
        pos
        for g, pos in (("accessor", K_ACC), ("deployment", K_DEP), ("line_item", K_LI), ("tags", K_TAGS))
        if g in groupings
    ]
    now = timeutil.now_us()
    zero = Decimal(0)
    sums: dict[tuple, Decimal] = {}
    with emu.store.lock:
        for dn, k, a in _rows(p, filters, start, end, now):
            if k[K_LI] is None or not keep(k):
                continue
            gk = (dn, tuple(k[pos] for pos in positions))
            sums[gk] = sums.get(gk, zero) + a[0]
        start_day, end_day = _resolve_days(p, start, end, now)
    results = []
    for dn, gv in sorted(sums, key=lambda gk: (gk[0], _sort_value(gk[1]))):
        day = timeutil.day_of(dn * DAY_US)
        vals = dict(zip(positions, gv, strict=True))
        tg = vals.get(K_TAGS)
        results.append(
            {
                "dollars": sums[(dn, gv)],
                "grouping": {
                    "start": day,
                    "end": day,
                    "accessor": vals.get(K_ACC),
                    "deployment": vals.get(K_DEP),
                    "line_item": vals.get(K_LI),
                    "tags": list(tg) if tg is not None else None,
                },
            }
        )
    return {"start": start_day, "end": end_day, "resolution": RESOLUTION, "results": results}


async def billing_fields(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "billing:read")
    q = Query(request.query_params)
    start, end = q.range()
    now = timeutil.now_us()
    accessors: set[str] = set()
    deployments: set[str] = set()
    tags: set[str] = set()
    seen: set[str] = set()
    with emu.store.lock:
        for _dn, k, _a in _rows(p, {}, start, end, now):
            if k[K_LI] is None:
                continue
            accessors.add(k[K_ACC])
            deployments.add(k[K_DEP])
            tags.update(k[K_TAGS])
            seen.add(k[K_LI])
    table = emu.store.prices.by_line_item
    line_items = {li: (table[li].label if li in table else li) for li in sorted(seen)}
    return {
        "accessors": sorted(accessors),
        "deployments": sorted(deployments),
        "tags": sorted(tags),
        "line_items": line_items,
    }


def _balance(p: Project) -> dict:
    return {
        "balance_id": p.balance_id,
        "amount": p.initial_balance - p.log.spent,
        "units": "USD",
        "purchase_order_id": p.purchase_order_id,
    }


async def list_balances(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "billing:read")
    return {"balances": [_balance(p)]}


async def get_balance(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "billing:read")
    if request.path_params["balance_id"] != p.balance_id:
        raise errors.not_found("Balance")
    return _balance(p)


async def list_purchases(emu: Emulator, request: Request) -> Any:
    _, p = _ctx(emu, request, "billing:read")
    Query(request.query_params).number("limit", 10, 1, 1000)
    return {
        "orders": [
            {
                "order_id": p.purchase_order_id,
                "expiration": timeutil.iso(p.created_us + 365 * 86400 * 10**6),
                "created": timeutil.iso(p.created_us),
                "amount": p.initial_balance,
                "units": "USD",
                "order_type": "prepaid",
            }
        ]
    }


# ---------------------------------------------------------------------------- models


def _model_view(name: str, family: str, kind: str, streaming: bool, batch: bool) -> dict:
    from .common import model_uuid

    base = {
        "name": name,
        "canonical_name": name,
        "architecture": family,
        "languages": ["en"],
        "version": "2026-01-01.0",
        "uuid": model_uuid(name),
    }
    if kind == "stt":
        base.update({"batch": batch, "streaming": streaming, "formatted_output": True})
    else:
        base["metadata"] = {
            "accent": "American",
            "age": "Adult",
            "color": "#000000",
            "image": "",
            "sample": "",
            "tags": [],
            "use_cases": [],
        }
    return base


def _models() -> dict:
    out: dict[str, list] = {"stt": [], "tts": []}
    for name, family, kind, streaming, batch in MODEL_CATALOG:
        out[kind].append(_model_view(name, family, kind, streaming, batch))
    return out


async def list_models(emu: Emulator, request: Request) -> Any:
    authenticate(emu.store, request.headers)
    return _models()


async def get_model(emu: Emulator, request: Request) -> Any:
    authenticate(emu.store, request.headers)
    mid = request.path_params["model_id"]
    for kind in ("stt", "tts"):
        for m in _models()[kind]:
            if mid in (m["uuid"], m["name"]):
                return m
    raise errors.not_found("Model")


async def list_project_models(emu: Emulator, request: Request) -> Any:
    _ctx(emu, request, "project:read")
    return _models()


async def get_project_model(emu: Emulator, request: Request) -> Any:
    _ctx(emu, request, "project:read")
    return await get_model(emu, request)
