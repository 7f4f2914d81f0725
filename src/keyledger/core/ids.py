"""Identifiers: short prefixed random ids (``cus_…``, ``key_…``) that say what they name."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
