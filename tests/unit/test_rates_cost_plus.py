from decimal import Decimal as D

import pytest

from keyledger.pricing.rates import cost_plus


@pytest.mark.parametrize(
    ("cost", "markup", "fx", "expected"),
    [
        (D("10"), D("0"), D("1"), D("10")),
        (D("10"), D("25"), D("1"), D("12.50")),
        (D("0.0043"), D("25"), D("1"), D("0.005375")),
        (D("10"), D("12.5"), D("0.92"), D("10.35")),
        (D("1.0000000001"), D("33.3333333333"), D("1"), D("1.3333333334663333333333")),
    ],
)
def test_cost_plus_marks_up_then_converts(cost, markup, fx, expected):
    assert cost_plus.charge(cost, markup, fx) == expected
