from decimal import Decimal as D

import pytest

from keyledger.core.errors import Invalid
from keyledger.pricing.units import converts, to_rate_unit


@pytest.mark.parametrize(
    ("quantity", "ledger", "rate_unit", "expected"),
    [
        (D("12.5"), "minute", "minute", D("12.5")),
        (D("12.5"), "minute", "second", D("750.0")),
        (D("90"), "minute", "hour", D("1.5")),
        (D("1"), "minute", "hour", D("0.0166666667")),  # kept to 10 places (the ledger's precision)
        (D("2"), "minute", "agent_hour", D("0.0333333333")),
        (D("7"), "minute", "agent_minute", D("7")),
        (D("123456"), "character", "1k_characters", D("123.456")),
        (D("123456"), "character", "1m_characters", D("0.123456")),
        (D("5"), "character", "character", D("5")),
        (D("1500"), "token", "1k_tokens", D("1.5")),
        (D("1500"), "token", "1m_tokens", D("0.0015")),
    ],
)
def test_conversions(quantity, ledger, rate_unit, expected):
    assert converts(ledger, rate_unit)
    got = to_rate_unit(quantity, ledger, rate_unit, line_item="x", rate="x")
    assert got == expected and isinstance(got, D)


@pytest.mark.parametrize(
    ("ledger", "rate_unit"),
    [("character", "minute"), ("minute", "1k_characters"), ("token", "hour"), ("minute", "token"),
     ("agent_minute", "minute"), ("minute", "furlong")],
)
def test_impossible_conversions_are_errors(ledger, rate_unit):
    assert not converts(ledger, rate_unit)
    with pytest.raises(Invalid, match=r"line item 'sync::aura-2' is measured in .* which rate 'sync::\*'"):
        to_rate_unit(D(1), ledger, rate_unit, line_item="sync::aura-2", rate="sync::*")
