"""Plan files: parse YAML or TOML, validate, build a :class:`~keyledger.pricing.model.Plan`. Pure (no I/O
beyond :func:`load_plan_file` reading the file it is given).

Numbers are exact. YAML is *composed* (not loaded): every number is read from its source text, so
``price: 0.012`` is exactly ``Decimal("0.012")``, never a float; quoted strings (``"0.0120"``) and integers
work too. Only plain decimal notation is accepted (no exponents, hex, octal, ``.inf``). TOML is read
with every float kept as its source text, like YAML. Errors name the file, the line and the field::

    plans/growth.yaml:12: rates."prerecorded::*".tiers[1].up_to: must be greater than 1000

YAML lines come from the node marks; TOML gives none, so its lines are found by searching the keys of the
field's path in the source, in order (best effort: the first matching line after the parent's line).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from keyledger.core.errors import Invalid
from keyledger.core.money import UNIT_PRICE_PLACES, minor_units
from keyledger.pricing.model import ByoPricing, Included, Mode, Pattern, Plan, Rate, Tier, TierMode
from keyledger.pricing.units import PRICE_UNITS, QUANTITY_PLACES

FieldPath = tuple[str | int, ...]
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)  # ASCII digits: "１０" is no price
MAX_NUMBER = Decimal("1e15")  # beyond this no price, fee or percent is meant (and exactness would suffer)
_PLAN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_PERIOD_KEY = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_TOP_KEYS = (
    "id", "name", "description", "currency", "mode", "markup_percent", "base_fee", "minimum",
    "tax_percent", "rates", "included", "effective_from", "exchange_rates", "byo_pricing",
)
_RATE_KEYS = ("unit", "price", "tiers", "tier_mode")
_TIER_KEYS = ("up_to", "price")


@dataclass(frozen=True)
class RawNumber:
    """A YAML number kept as its source text (never converted through float)."""

    text: str


# --------------------------------------------------------------------------- entry points


def detect_format(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    raise Invalid(f"{name}: a plan file is .yaml, .yml or .toml")


def load_plan_file(path: str | Path, *, today: date) -> tuple[Plan, str, str]:
    """Read and validate a plan file: (plan, source text, format)."""
    p = Path(path)
    fmt = detect_format(p.name)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Invalid(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read ({exc})") from None
    return parse_plan_text(text, name=str(path), fmt=fmt, today=today), text, fmt


def parse_plan_text(text: str, *, name: str, fmt: str, today: date) -> Plan:
    """Validate a plan's source text (``fmt``: yaml | toml); ``today`` is the default effective date."""
    if fmt == "yaml":
        data, locate = _yaml_tree(text, name)
    elif fmt == "toml":
        data, locate = _toml_tree(text, name)
    else:
        raise Invalid(f"{name}: unknown plan format {fmt!r} (yaml or toml)")
    return _Validator(name, locate).plan(data, today)


def plan_from_dict(data: dict[str, Any], *, name: str = "stored plan") -> Plan:
    """A plan from its canonical plain form (``Plan.to_dict()``), validated again."""
    return _Validator(name, lambda _path: None).plan(data, None)


# --------------------------------------------------------------------------- YAML and TOML trees


def _yaml_tree(text: str, name: str) -> tuple[Any, Callable[[FieldPath], int | None]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise Invalid(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise Invalid(f"{name}: not valid YAML: {exc}") from None
    if root is None:
        raise Invalid(f"{name}: the plan file is empty")
    lines: dict[FieldPath, int] = {}
    constructor = yaml.SafeLoader("")

    def at(node: yaml.Node, path: FieldPath) -> str:
        return f"{name}:{node.start_mark.line + 1}: {_fmt(path)}"

    def walk(node: yaml.Node, path: FieldPath) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise Invalid(f"{at(key_node, path)}: keys must be plain names")
                key = key_node.value
                if key in out:
                    raise Invalid(f"{at(key_node, path + (key,))}: given twice")
                lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = walk(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            return RawNumber(node.value)
        try:
            return constructor.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as exc:
            raise Invalid(f"{at(node, path)}: not a valid value ({exc})") from None

    data = walk(root, ())

    def locate(path: FieldPath) -> int | None:
        while path not in lines and path:
            path = path[:-1]
        return lines.get(path)

    return data, locate


def _toml_tree(text: str, name: str) -> tuple[Any, Callable[[FieldPath], int | None]]:
    try:
        data = tomllib.loads(text, parse_float=RawNumber)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        if m:
            raise Invalid(f"{name}:{m.group(1)}: not valid TOML: {msg[:m.start()].strip()}") from None
        raise Invalid(f"{name}: not valid TOML: {msg}") from None
    source = text.splitlines()

    def locate(path: FieldPath) -> int | None:
        start, found = 0, None
        for part in path:
            if isinstance(part, int):
                continue
            key = re.escape(part)
            rx = re.compile(rf"""(?:^|[\s{{,.\[])(?:{key}|"{key}"|'{key}')\s*(?:=|\]|\.)""")
            for i in range(start, len(source)):
                if rx.search(source[i]):
                    start = found = i
                    break
            else:
                break
        return None if found is None else found + 1

    return data, locate


def _fmt(path: FieldPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else f'"{part}"'
            out += text if not out else f".{text}"
    return out or "(plan)"


# --------------------------------------------------------------------------- validation


class _Validator:
    def __init__(self, name: str, locate: Callable[[FieldPath], int | None]) -> None:
        self.name = name
        self.locate = locate

    def fail(self, path: FieldPath, message: str) -> Invalid:
        line = self.locate(path)
        where = f"{self.name}:{line}" if line else self.name
        return Invalid(f"{where}: {_fmt(path)}: {message}")

    # ---- scalars

    def mapping(self, value: Any, path: FieldPath, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping of names to values")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail(path + (key,), "unknown field (allowed: " + ", ".join(allowed) + ")")
        return value

    def string(self, value: Any, path: FieldPath) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty text")
        return value.strip()

    def choice(self, value: Any, path: FieldPath, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def number(
        self, value: Any, path: FieldPath, *, places: int, places_why: str = "", positive: bool = False
    ) -> Decimal:
        if isinstance(value, bool) or value is None:
            raise self.fail(path, f"must be a number, not {value!r}")
        if isinstance(value, float):  # not produced by our readers; a caller's dict might hold one
            raise self.fail(path, f"give an exact decimal, quoted (\"{value!r}\"), not a float")
        if isinstance(value, RawNumber | str):
            text = value.text if isinstance(value, RawNumber) else value
            if not _NUMBER.fullmatch(text.strip()):
                raise self.fail(path, f"must be a decimal number such as \"0.0120\" (got {text!r})")
            result = Decimal(text.strip())
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, Decimal):
            result = value
        else:
            raise self.fail(path, f"must be a number (got {value!r})")
        if not result.is_finite():
            raise self.fail(path, "must be a finite number")
        if result < 0 or (positive and result == 0):
            raise self.fail(path, "must be greater than 0" if positive else "must not be negative")
        if result >= MAX_NUMBER:
            raise self.fail(path, f"is too large (must be below {MAX_NUMBER:,.0f})")
        exponent = result.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            raise self.fail(path, f"at most {places} decimal places{places_why} (got {result})")
        return result

    def day(self, value: Any, path: FieldPath) -> date:
        if isinstance(value, datetime):
            raise self.fail(path, "must be a date (YYYY-MM-DD), not a date and time")
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.fail(path, f"must be a date (YYYY-MM-DD), got {value!r}")

    # ---- the plan

    def plan(self, data: Any, today: date | None) -> Plan:
        top = self.mapping(data, (), _TOP_KEYS)
        for required in ("id", "currency", "mode"):
            if required not in top:
                raise self.fail((required,), "required")
        plan_id = self.string(top["id"], ("id",))
        if not _PLAN_ID.fullmatch(plan_id):
            raise self.fail(("id",), "letters, digits, '.', '_' and '-' only (at most 100)")
        name = self.string(top.get("name", plan_id), ("name",))
        currency = self.string(top["currency"], ("currency",))
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise self.fail(("currency",), f"must be an ISO 4217 code, like USD (got {currency!r})")
        mode = Mode(self.choice(top["mode"], ("mode",), tuple(m.value for m in Mode)))
        minor = minor_units(currency)
        money = {"places": minor, "places_why": f" for {currency}"}
        percent = {"places": UNIT_PRICE_PLACES}
        markup = self.number(top.get("markup_percent", 0), ("markup_percent",), **percent)
        if markup and mode is not Mode.COST_PLUS:
            raise self.fail(("markup_percent",), "only for mode cost_plus")
        tax = self.number(top.get("tax_percent", 0), ("tax_percent",), **percent)
        if tax > 100:
            raise self.fail(("tax_percent",), "must be at most 100")
        base_fee = self.number(top.get("base_fee", 0), ("base_fee",), **money)
        minimum = self.number(top.get("minimum", 0), ("minimum",), **money)

        rates_raw = self.mapping(top.get("rates", {}) or {}, ("rates",))
        included_raw = self.mapping(top.get("included", {}) or {}, ("included",))
        if mode is Mode.RATE_CARD:
            if not rates_raw:
                raise self.fail(("rates",), "required for mode rate_card (at least one rate)")
        else:
            if rates_raw:
                raise self.fail(("rates",), "only for mode rate_card")
            if included_raw:
                raise self.fail(("included",), "only for mode rate_card")
        rates = tuple(self.rate(pattern, spec) for pattern, spec in rates_raw.items())
        included = tuple(
            Included(
                self.pattern(pattern, ("included", pattern)),
                self.number(qty, ("included", pattern), places=QUANTITY_PLACES),
            )
            for pattern, qty in included_raw.items()
        )

        if "effective_from" in top:
            effective_from = self.day(top["effective_from"], ("effective_from",))
        elif today is not None:
            effective_from = today
        else:
            raise self.fail(("effective_from",), "required")
        fx_raw = self.mapping(top.get("exchange_rates", {}) or {}, ("exchange_rates",))
        fx = []
        for key, value in fx_raw.items():
            if not _PERIOD_KEY.fullmatch(key):
                raise self.fail(("exchange_rates", key), "periods are named YYYY-MM")
            rate = self.number(value, ("exchange_rates", key), places=UNIT_PRICE_PLACES, positive=True)
            fx.append((key, rate))
        byo = ByoPricing(
            self.choice(top.get("byo_pricing", "zero"), ("byo_pricing",), tuple(b.value for b in ByoPricing))
        )
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.fail(("description",), "must be text")
        return Plan(
            id=plan_id, name=name, currency=currency, mode=mode, effective_from=effective_from,
            markup_percent=markup, base_fee=base_fee, minimum=minimum, tax_percent=tax, rates=rates,
            included=included, exchange_rates=tuple(sorted(fx)), byo_pricing=byo, description=description,
        )

    def pattern(self, text: Any, path: FieldPath) -> Pattern:
        if not isinstance(text, str) or not text.strip() or text != text.strip():
            raise self.fail(path, "a pattern is a line-item name, with * for any text")
        return Pattern(text)

    def rate(self, pattern_text: str, spec: Any) -> Rate:
        path: FieldPath = ("rates", pattern_text)
        pattern = self.pattern(pattern_text, path)
        spec = self.mapping(spec, path, _RATE_KEYS)
        if "unit" not in spec:
            raise self.fail(path, "unit: required (" + ", ".join(PRICE_UNITS) + ")")
        unit = self.choice(spec["unit"], path + ("unit",), PRICE_UNITS)
        has_price, has_tiers = "price" in spec, "tiers" in spec
        if has_price == has_tiers:
            raise self.fail(path, "give either price or tiers (with tier_mode)")
        price_places = {"places": UNIT_PRICE_PLACES, "places_why": " in a unit price"}
        if has_price:
            if "tier_mode" in spec:
                raise self.fail(path + ("tier_mode",), "only with tiers")
            return Rate(pattern, unit, price=self.number(spec["price"], path + ("price",), **price_places))
        if "tier_mode" not in spec:
            raise self.fail(path, "tier_mode: required with tiers (graduated or volume)")
        modes = tuple(t.value for t in TierMode)
        tier_mode = TierMode(self.choice(spec["tier_mode"], path + ("tier_mode",), modes))
        raw_tiers = spec["tiers"]
        if not isinstance(raw_tiers, list) or not raw_tiers:
            raise self.fail(path + ("tiers",), "must be a list of {up_to, price}, the last with up_to: null")
        tiers: list[Tier] = []
        for i, raw in enumerate(raw_tiers):
            tpath = path + ("tiers", i)
            raw = self.mapping(raw, tpath, _TIER_KEYS)
            if "price" not in raw:
                raise self.fail(tpath, "price: required")
            price = self.number(raw["price"], tpath + ("price",), **price_places)
            last = i == len(raw_tiers) - 1
            up_raw = raw.get("up_to")
            if up_raw is None:
                if not last:
                    raise self.fail(tpath + ("up_to",), "only the last tier may be unbounded (up_to: null)")
                up_to = None
            else:
                if last:
                    raise self.fail(tpath + ("up_to",), "the last tier must be unbounded (up_to: null)")
                up_to = self.number(up_raw, tpath + ("up_to",), places=QUANTITY_PLACES, positive=True)
                if tiers and tiers[-1].up_to is not None and up_to <= tiers[-1].up_to:
                    raise self.fail(tpath + ("up_to",), f"must be greater than {tiers[-1].up_to}")
            tiers.append(Tier(up_to, price))
        return Rate(pattern, unit, tiers=tuple(tiers), tier_mode=tier_mode)
