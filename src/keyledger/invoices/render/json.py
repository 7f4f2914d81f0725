"""JSON export: the ``invoices show --json`` object (PRODUCT §11), amounts as exact decimal strings."""

from __future__ import annotations

import json


def render_json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
