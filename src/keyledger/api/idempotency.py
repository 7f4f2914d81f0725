"""``Idempotency-Key`` on creating writes.

The first request with a key (per caller) records a *pending* row with the request's fingerprint
(method, path, body), runs, and stores its response. A retry with the same key and the same request
gets that stored response (header ``Idempotent-Replayed: true``) and creates nothing; the same key with a
different request is 422. Concurrent identical requests wait for the first to finish and get its
response. A 4xx outcome is stored like a success (the retry would fail the same way); a 5xx or provider
failure removes the row so that a retry runs again. Keys are kept 24 hours, then purged.

A stored response may hold a secret (a key creation answers the key's secret, a portal token creation
the token), so the body is stored encrypted with the configured secret key (associated data: caller and
key); after a secret-key rotation that dropped the old key, such a replay is refused with a clear 409.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from keyledger.api.jsonout import jsonable
from keyledger.api.problems import ApiError, problem
from keyledger.core.crypto import DecryptionError, associated_data
from keyledger.core.errors import Conflict, Invalid, KeyledgerError
from keyledger.customers.tokens import Principal
from keyledger.db.tables_api import idempotency_keys as ik

RETENTION = timedelta(hours=24)
WAIT_SECONDS = 60.0  # float-ok: seconds


def _fingerprint(request: Request, body: Any) -> str:
    canon = json.dumps(jsonable(body), sort_keys=True, separators=(",", ":"), default=str)
    raw = f"{request.method}\n{request.url.path}\n{canon}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _ad(actor: str, key: str) -> bytes:
    return associated_data("idempotency_keys", f"{actor}\n{key}", "body")


def _stored(row: Any, cipher) -> Response:
    try:
        content = cipher.decrypt_bytes(row.body, _ad(row.actor, row.key)) if row.body else b""
    except DecryptionError:
        raise Conflict(
            "the first response to this Idempotency-Key can no longer be read (the secret key was "
            "rotated); send the request with a new Idempotency-Key"
        ) from None
    return Response(
        content=content,
        status_code=row.status_code,
        media_type=row.content_type,
        headers={"Idempotent-Replayed": "true"},
    )


def run(
    request: Request, p: Principal, body: Any, produce: Callable[[], tuple[int, Any]]
) -> Response:
    """Answer a creating write: ``produce()`` returns ``(status, payload)`` and runs at most once per key."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, payload = produce()
        return JSONResponse(jsonable(payload), status_code=status)
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        raise Invalid("Idempotency-Key must be 1 to 255 printable characters (a UUID is a good choice)")
    rt = request.app.state.runtime
    engine, now = rt.engine, rt.clock.now()
    fingerprint = _fingerprint(request, body)
    actor = p.actor
    with engine.begin() as db:
        db.execute(delete(ik).where(ik.c.created_at < now - RETENTION))
    try:
        with engine.begin() as db:
            db.execute(insert(ik).values(actor=actor, key=key, fingerprint=fingerprint, state="pending",
                                         created_at=now))
    except IntegrityError:
        return _existing(engine, rt.cipher, actor, key, fingerprint)
    try:
        status, payload = produce()
    except KeyledgerError as exc:
        if exc.http_status >= 500:
            _forget(engine, actor, key)
            raise
        resp = problem(exc.http_status, str(exc), title=exc.title)
        _finish(engine, rt.cipher, actor, key, resp, rt.clock.now())
        return resp
    except ApiError as exc:
        resp = problem(exc.status, exc.detail)
        _finish(engine, rt.cipher, actor, key, resp, rt.clock.now())
        return resp
    except BaseException:
        _forget(engine, actor, key)
        raise
    resp = JSONResponse(jsonable(payload), status_code=status)
    _finish(engine, rt.cipher, actor, key, resp, rt.clock.now())
    return resp


def _finish(engine, cipher, actor: str, key: str, resp: Response, at) -> None:
    with engine.begin() as db:
        db.execute(
            update(ik)
            .where(ik.c.actor == actor, ik.c.key == key)
            .values(state="done", status_code=resp.status_code, content_type=resp.media_type,
                    body=cipher.encrypt(bytes(resp.body), _ad(actor, key)), finished_at=at)
        )


def _forget(engine, actor: str, key: str) -> None:
    with engine.begin() as db:
        db.execute(delete(ik).where(ik.c.actor == actor, ik.c.key == key, ik.c.state == "pending"))


def _existing(engine, cipher, actor: str, key: str, fingerprint: str) -> Response:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with engine.connect() as db:
            row = db.execute(select(ik).where(ik.c.actor == actor, ik.c.key == key)).first()
        if row is None:
            raise Conflict("the first request with this Idempotency-Key failed and was released; retry it")
        if row.fingerprint != fingerprint:
            raise Invalid(
                "this Idempotency-Key was already used with a different request (method, path or body); "
                "use a new key for a new request"
            )
        if row.state == "done":
            return _stored(row, cipher)
        if time.monotonic() >= deadline:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry later")
        time.sleep(0.05)
