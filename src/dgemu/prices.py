"""The price table (``data/prices.json`` or ``--price-file``) and the cost of one request, in Decimal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from pathlib import Path

USD_PLACES = Decimal("1E-10")
DEFAULT_MODELS = {
    "listen": "base-general",
    "speak": "aura-asteria-en",
    "read": "read",
    "agent": "voice-agent",
}


@dataclass(frozen=True, slots=True)
class PriceRow:
    line_item: str
    endpoint: str
    method: str
    family: str
    unit: str
    price: Decimal
    price_in: Decimal
    price_out: Decimal
    label: str
    source: str


class UnknownModel(ValueError):
    pass


def quantize_usd(value: Decimal) -> Decimal:
    return value.quantize(USD_PLACES, rounding=ROUND_HALF_EVEN)


class PriceTable:
    def __init__(self, rows: list[PriceRow]):
        self.rows = rows
        self.by_line_item = {r.line_item: r for r in rows}
        self._by_key: dict[tuple[str, str], list[PriceRow]] = {}
        for r in rows:
            self._by_key.setdefault((r.endpoint, r.method), []).append(r)
        for lst in self._by_key.values():
            lst.sort(key=lambda r: len(r.family), reverse=True)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        if path is None:
            raw = resources.files("dgemu").joinpath("data/prices.json").read_text(encoding="utf-8")
        else:
            raw = Path(path).read_text(encoding="utf-8")
        doc = json.loads(raw, parse_float=Decimal)
        rows = []
        for item in doc["items"]:
            rows.append(
                PriceRow(
                    line_item=item["line_item"],
                    endpoint=item["endpoint"],
                    method=item["method"],
                    family=item["family"],
                    unit=item["unit"],
                    price=Decimal(str(item.get("price", "0"))),
                    price_in=Decimal(str(item.get("price_in", "0"))),
                    price_out=Decimal(str(item.get("price_out", "0"))),
                    label=item.get("label", item["line_item"]),
                    source=item.get("source", ""),
                )
            )
        return cls(rows)

    def row_for(self, endpoint: str, method: str, model: str) -> PriceRow:
        """The longest family that prefixes the model name (``nova-3-medical`` → ``nova-3``)."""
        candidates = self._by_key.get((endpoint, method), [])
        if endpoint in ("agent", "read") and candidates:
            return candidates[0]
        m = model.lower()
        for r in candidates:
            if m == r.family or m.startswith(r.family + "-"):
                return r
        raise UnknownModel(f"No such model/method combination found: {endpoint} {method} {model!r}")

    @staticmethod
    def cost(
        row: PriceRow,
        *,
        seconds: Decimal = Decimal(0),
        characters: int = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> Decimal:
        if row.unit == "minute":
            value = row.price * seconds / 60
        elif row.unit == "1k_characters":
            value = row.price * characters / 1000
        elif row.unit == "1k_tokens":
            value = (row.price_in * tokens_in + row.price_out * tokens_out) / 1000
        else:
            raise ValueError(f"unknown price unit {row.unit!r}")
        return quantize_usd(value)
