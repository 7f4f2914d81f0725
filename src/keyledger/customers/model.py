"""Pure types and rules for customers, connections and keys. No I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keyledger.core.errors import Invalid

DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_API_KEY_ENV = "DEEPGRAM_API_KEY"
# Least privilege: a customer's key may call the data plane (listen, speak, read, agent) and nothing else.
DEFAULT_SCOPES: tuple[str, ...] = ("usage:write",)
KEY_TAG = "keyledger"
OP_TAG_PREFIX = "op:"
CUSTOMER_TAG_PREFIX = "customer:"
MAX_TTL = timedelta(days=3650)

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SCOPE = re.compile(r"^[a-z][a-z0-9:_-]*$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TTL = re.compile(r"^(\d+)\s*([smhdw])$")
_TTL_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

CUSTOMER_STATUSES = ("active", "suspended")
KEY_STATUSES = ("active", "revoked", "expired")


# ---------------------------------------------------------------------------- validation


def validate_currency(value: str) -> str:
    code = (value or "").strip().upper()
    if not _CURRENCY.match(code):
        raise Invalid(f"currency {value!r} is not an ISO 4217 code (three letters, e.g. USD)")
    return code


def validate_timezone(value: str) -> str:
    name = (value or "").strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise Invalid(f"time zone {value!r} is unknown (use an IANA name such as Europe/Berlin)") from None
    return name


def validate_email(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    email = value.strip()
    if len(email) > 300 or not _EMAIL.match(email):
        raise Invalid(f"email {value!r} is not a valid address")
    return email


def _control_character(text: str) -> str | None:
    """The first control or bidirectional-override character (they hide or reorder what a name shows)."""
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") or "\u202a" <= c <= "\u202e" or (
                "\u2066" <= c <= "\u2069"):
            return c
    return None


def validate_customer_name(value: str) -> str:
    name = (value or "").strip()
    if not name:
        raise Invalid("customer name must not be empty")
    if (bad := _control_character(name)) is not None:
        raise Invalid(f"customer name must not contain control characters (found U+{ord(bad):04X})")
    if len(name) > 300:
        raise Invalid("customer name is longer than 300 characters")
    return name


def validate_external_id(value: str) -> str:
    ext = (value or "").strip()
    if not ext:
        raise Invalid("external id must not be empty")
    if len(ext) > 200 or any(c.isspace() for c in ext) or "," in ext:
        raise Invalid(f"external id {ext[:40]!r} must be at most 200 characters, without spaces or commas")
    bad = _control_character(ext) or next((c for c in ext if unicodedata.category(c) == "Cf"), None)
    if bad is not None:
        raise Invalid(f"external id must not contain control or format characters (found U+{ord(bad):04X})")
    return ext


def validate_connection_name(value: str) -> str:
    if not _NAME.match(value or ""):
        raise Invalid(
            f"connection name {value!r} must start with a letter or digit and use only letters, digits, . _ -"
        )
    return value


def validate_env_var(value: str) -> str:
    if not _ENV_VAR.match(value or ""):
        raise Invalid(f"{value!r} is not an environment variable name")
    return value


def validate_base_url(value: str) -> str:
    url = (value or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", url):
        raise Invalid(f"base URL {value!r} must start with http:// or https://")
    return url


def validate_scopes(scopes: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if not scopes:
        return DEFAULT_SCOPES
    result: list[str] = []
    for scope in scopes:
        s = scope.strip()
        if not _SCOPE.match(s):
            raise Invalid(f"scope {scope!r} is not a Deepgram scope name (e.g. usage:write)")
        if s not in result:
            result.append(s)
    return tuple(result)


def parse_ttl(value: str | None) -> timedelta | None:
    """``90d``, ``12h``, ``30m``, ``3600s``, ``2w`` → a positive timedelta; None/empty → no expiry."""
    if value is None or value.strip() == "":
        return None
    match = _TTL.match(value.strip().lower())
    if not match:
        raise Invalid(f"TTL {value!r} is not a duration such as 90d, 12h, 30m or 3600s")
    amount = int(match.group(1))
    ttl = timedelta(**{_TTL_UNITS[match.group(2)]: amount})
    if ttl <= timedelta(0):
        raise Invalid(f"TTL {value!r} must be longer than zero")
    if ttl > MAX_TTL:
        raise Invalid(f"TTL {value!r} is longer than ten years")
    return ttl


# ---------------------------------------------------------------------------- keys


def key_tags(external_id: str, operation_id: str) -> list[str]:
    """Tags on every Deepgram key keyledger creates: who it is for and the operation that made it."""
    return [KEY_TAG, f"{CUSTOMER_TAG_PREFIX}{external_id}", f"{OP_TAG_PREFIX}{operation_id}"]


def key_comment(customer_name: str, external_id: str, operation_id: str, comment: str | None) -> str:
    """The Deepgram comment: the operator's text (or the customer), plus the operation id.

    The operation id is in the comment as well as in the tags because Deepgram's key list is only
    documented to carry ``comment``; recovery must find it either way.
    """
    text = (comment or f"keyledger: {customer_name} ({external_id})").strip()
    return f"{text} [{OP_TAG_PREFIX}{operation_id}]"


def carries_operation(tags: tuple[str, ...] | list[str], comment: str, operation_id: str) -> bool:
    marker = f"{OP_TAG_PREFIX}{operation_id}"
    return marker in tags or f"[{marker}]" in (comment or "")


# ---------------------------------------------------------------------------- records


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass(frozen=True)
class Customer:
    id: str
    external_id: str
    name: str
    email: str | None
    plan: str | None
    currency: str
    timezone: str
    status: str
    billing_mode: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Customer:
        m = row._mapping
        return cls(**{f: m[f] for f in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "name": self.name,
            "email": self.email,
            "plan": self.plan,
            "currency": self.currency,
            "timezone": self.timezone,
            "status": self.status,
            "billing_mode": self.billing_mode,
        }


@dataclass(frozen=True)
class Connection:
    id: str
    name: str
    kind: str
    project_id: str
    base_url: str
    api_key_env: str | None
    has_stored_key: bool
    customer_id: str | None
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Connection:
        m = row._mapping
        return cls(
            id=m["id"],
            name=m["name"],
            kind=m["kind"],
            project_id=m["project_id"],
            base_url=m["base_url"],
            api_key_env=m["api_key_env"],
            has_stored_key=m["api_key_ciphertext"] is not None,
            customer_id=m["customer_id"],
            status=m["status"],
            created_at=m["created_at"],
        )

    @property
    def key_source(self) -> str:
        return "stored (encrypted)" if self.has_stored_key else f"env:{self.api_key_env}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "project_id": self.project_id,
            "base_url": self.base_url,
            "key_source": "stored" if self.has_stored_key else "env",
            "api_key_env": self.api_key_env,
            "customer_id": self.customer_id,
            "status": self.status,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class Key:
    """A customer's Deepgram key as the ledger knows it. Never carries the secret."""

    id: str
    customer_id: str
    connection_id: str
    connection: str  # the connection's name
    api_key_id: str
    comment: str | None
    scopes: tuple[str, ...]
    tags: tuple[str, ...]
    operation_id: str
    status: str
    has_secret: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "connection": self.connection,
            "api_key_id": self.api_key_id,
            "scopes": list(self.scopes),
            "status": self.status,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True)
class IssuedKey:
    """The result of creating a key: the ledger key plus the secret, shown once."""

    key: Key
    secret: str | None  # None when an interrupted create was adopted: the secret was never seen
    adopted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key.id,
            "customer_id": self.key.customer_id,
            "connection": self.key.connection,
            "api_key_id": self.key.api_key_id,
            "secret": self.secret,
            "scopes": list(self.key.scopes),
            "tags": list(self.key.tags),
            "expires_at": iso(self.key.expires_at),
        }
