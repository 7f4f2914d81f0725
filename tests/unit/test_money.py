"""Money: Decimal only, one half-up rounding to the currency's minor unit, exact JSON parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyledger.core.errors import Invalid
from keyledger.core.money import format_amount, loads_exact, minor_units, round_money, to_decimal

amounts = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=10, allow_nan=False)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "USD", "0.01"),
        ("0.0049999", "USD", "0.00"),
        ("-0.005", "USD", "-0.01"),
        ("2.5", "JPY", "3"),
        ("1.0005", "KWD", "1.001"),
        ("12.345", "usd", "12.35"),
    ],
)
def test_round_half_up_to_minor_unit(amount, currency, expected):
    assert round_money(Decimal(amount), currency) == Decimal(expected)


@given(amounts, st.sampled_from(["USD", "EUR", "JPY", "KWD"]))
def test_rounding_is_within_half_a_minor_unit_and_idempotent(amount, currency):
    rounded = round_money(amount, currency)
    unit = Decimal(1).scaleb(-minor_units(currency))
    assert abs(rounded - amount) <= unit / 2
    assert round_money(rounded, currency) == rounded
    assert rounded.as_tuple().exponent == -minor_units(currency)


def test_floats_are_refused():
    with pytest.raises(TypeError):
        round_money(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        to_decimal(0.1)
    with pytest.raises(Invalid):
        to_decimal("abc")
    with pytest.raises(Invalid):
        to_decimal("NaN")
    assert to_decimal(" 12.34 ") == Decimal("12.34")


def test_json_numbers_parse_exactly_and_format_without_exponent():
    data = loads_exact('{"usd": 0.1, "n": 3}')
    assert data["usd"] == Decimal("0.1") and isinstance(data["usd"], Decimal)
    assert format_amount(Decimal("1E-7")) == "0.0000001"
    assert format_amount(Decimal("12.3400")) == "12.3400"
