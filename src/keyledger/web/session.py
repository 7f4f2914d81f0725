"""Browser sessions: a sealed (signed and encrypted), HttpOnly, SameSite=Strict cookie holding the token the
user signed in with (re-authenticated on every request, so revoking the token ends the session) and a
per-session CSRF token.

The cookie is sealed (authenticated encryption, AES-GCM) with the keyring of ``settings.secret_key``, so it
can be neither forged nor read; it is ``Secure`` whenever the request came over HTTPS. Forms carry the CSRF
token in a hidden field, compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from keyledger.customers.tokens import Principal, TokenService

COOKIE = "kl_session"
PRE_COOKIE = "kl_login"  # CSRF token for the sign-in forms (before there is a session)
MAX_AGE = 12 * 3600


class LoginRequired(Exception):
    def __init__(self, portal: bool) -> None:
        self.portal = portal


class CsrfFailed(Exception):
    pass


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str

    @property
    def actor(self) -> str:
        return self.principal.actor


def runtime(request: Request):
    return request.app.state.runtime


AD = b"keyledger-web-session"


def sign(request: Request, payload: dict) -> str:
    """Seal ``payload`` with the runtime's cipher (AES-GCM under ``settings.secret_key``'s keyring): the
    cookie is authenticated (tampering fails) and opaque (the token inside is not readable)."""
    blob = runtime(request).cipher.encrypt(json.dumps(payload, separators=(",", ":")), AD)
    return base64.urlsafe_b64encode(blob).decode().rstrip("=")


def unsign(request: Request, value: str | None) -> dict | None:
    if not value:
        return None
    try:
        blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(runtime(request).cipher.decrypt(blob, AD))
    except Exception:  # tampered, truncated, from another key: no session
        return None
    if not isinstance(data, dict) or data.get("exp", 0) < time.time():
        return None
    return data


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


def start(request: Request, response: Response, token: str, kind: str) -> None:
    payload = {"t": token, "k": kind, "c": secrets.token_urlsafe(24), "exp": int(time.time()) + MAX_AGE}
    set_cookie(request, response, COOKIE, sign(request, payload), MAX_AGE)
    response.delete_cookie(PRE_COOKIE, path="/")


def end(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")


def authenticate(request: Request, token: str) -> Principal | None:
    return TokenService(runtime(request)).authenticate(token.strip()) if token.strip() else None


def current(request: Request, *, portal: bool) -> Session:
    data = unsign(request, request.cookies.get(COOKIE))
    p = authenticate(request, data["t"]) if data else None
    if p is None or p.is_admin == portal:
        raise LoginRequired(portal)
    return Session(p, data["c"])


def admin_session(request: Request) -> Session:
    return current(request, portal=False)


def portal_session(request: Request) -> Session:
    return current(request, portal=True)


def login_csrf(request: Request) -> tuple[str, str | None]:
    """The sign-in form's CSRF token, and a new cookie value to set when there was none."""
    data = unsign(request, request.cookies.get(PRE_COOKIE))
    if data:
        return data["c"], None
    tok = secrets.token_urlsafe(24)
    return tok, sign(request, {"c": tok, "exp": int(time.time()) + 3600})


def check_login_csrf(request: Request, form: dict[str, str]) -> None:
    data = unsign(request, request.cookies.get(PRE_COOKIE))
    if not data or not hmac.compare_digest(str(data["c"]), form.get("csrf", "")):
        raise CsrfFailed()


def check_csrf(session: Session, form: dict[str, str]) -> None:
    if not hmac.compare_digest(session.csrf, form.get("csrf", "")):
        raise CsrfFailed()


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (no multipart needed: the UI only posts small text forms)."""
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
