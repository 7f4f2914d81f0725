"""Deepgram-shaped errors (API_NOTES §1.4): legacy ``{err_code, err_msg, request_id}``, modern
``{category, message, details, request_id}`` and bare text bodies."""

from __future__ import annotations

import uuid
from typing import Any


def new_request_id() -> str:
    return str(uuid.uuid4())


class DgError(Exception):
    """An error answered to the client with a Deepgram-shaped body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, request_id: str = ""):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.request_id = request_id


def legacy(
    status: int,
    err_code: str,
    err_msg: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    with_request_id: bool = True,
) -> DgError:
    rid = request_id or new_request_id()
    body: dict[str, Any] = {"err_code": err_code, "err_msg": err_msg}
    if with_request_id:
        body["request_id"] = rid
    return DgError(status, body, headers, rid)


def modern(
    status: int, category: str, message: str, details: str, *, request_id: str | None = None
) -> DgError:
    rid = request_id or new_request_id()
    return DgError(
        status, {"category": category, "message": message, "details": details, "request_id": rid}, None, rid
    )


def text(status: int, message: str) -> DgError:
    return DgError(status, message, None, new_request_id())


def invalid_auth() -> DgError:
    return legacy(
        401, "INVALID_AUTH", "Invalid credentials.", headers={"WWW-Authenticate": 'Token realm="Deepgram"'}
    )


def forbidden() -> DgError:
    return legacy(403, "FORBIDDEN", "Insufficient permissions.")


def project_not_found() -> DgError:
    return legacy(404, "PROJECT_NOT_FOUND", "Project not found.")


def not_found(what: str) -> DgError:
    return legacy(404, "NOT_FOUND", f"{what} not found.")


def bad_query(message: str) -> DgError:
    return legacy(400, "INVALID_QUERY_PARAMETER", message)


def bad_request(message: str) -> DgError:
    return legacy(400, "Bad Request", message)


def invalid_json(details: str) -> DgError:
    return modern(400, "INVALID_JSON", "Invalid JSON submitted.", details)
