"""JSON rendering that writes ``Decimal`` values as exact JSON numbers (never through float)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from starlette.responses import Response

_MARK = "\u0001dgdec\u0001"
# json.dumps escapes \u0001 as the six characters \u0001; the marker can therefore only come from here.
_ESCAPED = json.dumps(_MARK)[1:-1]
_PATTERN = re.compile('"' + re.escape(_ESCAPED) + r"(-?[0-9.]+)" + re.escape(_ESCAPED) + '"')


def decimal_text(value: Decimal) -> str:
    """Fixed-point text of a finite Decimal without exponent and without trailing zeros."""
    if not value.is_finite():
        raise ValueError("non-finite decimal")
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return f"{_MARK}{decimal_text(obj)}{_MARK}"
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    text = json.dumps(obj, default=_default, ensure_ascii=False, separators=(",", ":"))
    if _ESCAPED in text:
        text = _PATTERN.sub(r"\1", text)
    return text


class DgJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")
