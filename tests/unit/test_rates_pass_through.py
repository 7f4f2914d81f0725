from decimal import Decimal as D

import pytest

from keyledger.pricing.rates import pass_through


@pytest.mark.parametrize(
    ("cost", "fx", "expected"),
    [
        (D("0"), D("1"), D("0")),
        (D("12.3456789"), D("1"), D("12.3456789")),
        (D("12.3456789"), D("0.92"), D("11.358024588")),
        (D("0.0000000001"), D("1.2345678901"), D("1.2345678901E-10")),
    ],
)
def test_pass_through_is_cost_times_exchange_rate(cost, fx, expected):
    assert pass_through.charge(cost, fx) == expected
