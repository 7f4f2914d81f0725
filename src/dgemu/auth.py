"""Roles and scopes (API_NOTES §4): role names expand to permissions; each endpoint needs one permission."""

from __future__ import annotations

_GROUP = ("read", "read:invites", "read:scopes", "write", "write:invites", "write:scopes", "write:kick")
_MEMBERS = tuple(f"members:{p}" for p in _GROUP)
_ADMINS = tuple(f"admins:{p}" for p in _GROUP)
_OWNERS = tuple(f"owners:{p}" for p in _GROUP)

ROLES: dict[str, frozenset[str]] = {
    "owner": frozenset(
        (
            "project:read",
            "project:write",
            "project:write:settings",
            "project:write:destroy",
            "keys:read",
            "keys:write",
            *_MEMBERS,
            *_ADMINS,
            *_OWNERS,
            "usage:read",
            "usage:write",
            "billing:read",
            "billing:write",
        )
    ),
    "admin": frozenset(
        (
            "project:read",
            "project:write",
            "keys:read",
            "keys:write",
            *_MEMBERS,
            *_ADMINS,
            "owners:read",
            "owners:read:invites",
            "owners:read:scopes",
            "usage:read",
            "usage:write",
            "billing:read",
        )
    ),
    "member": frozenset(
        ("project:read", "project:write", "keys:read", "keys:write", "usage:read", "usage:write")
    ),
}
ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}

SELF_HOSTED = frozenset(
    (
        "self-hosted:products",
        "self-hosted:product:api",
        "self-hosted:product:engine",
        "self-hosted:product:license-proxy",
        "self-hosted:product:dgtools",
        "self-hosted:product:billing",
        "self-hosted:product:hotpepper",
        "self-hosted:product:metrics-server",
    )
)
ACCOUNT = frozenset(("account:read", "account:write"))
GRANULAR = frozenset().union(*ROLES.values()) | SELF_HOSTED | ACCOUNT
KNOWN_SCOPES = GRANULAR | frozenset(ROLES)

# Implied permissions between granular scopes (D: working-with-roles).
IMPLIES: dict[str, tuple[str, ...]] = {
    "project:write": ("project:read",),
    "keys:write": ("keys:read",),
    "usage:write": (),
    "billing:write": ("billing:read",),
    "account:write": ("account:read",),
}


def expand(scopes: tuple[str, ...] | list[str]) -> frozenset[str]:
    perms: set[str] = set()
    for s in scopes:
        if s in ROLES:
            perms |= ROLES[s]
        else:
            perms.add(s)
            perms.update(IMPLIES.get(s, ()))
    return frozenset(perms)


def role_rank(scopes: tuple[str, ...] | list[str]) -> int:
    return max((ROLE_RANK.get(s, 0) for s in scopes), default=0)


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in KNOWN_SCOPES]
