from decimal import Decimal as D

import pytest

from keyledger.pricing.rates import Segment, flat, total


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [
        (D("0"), D("0.0120"), D("0")),
        (D("1"), D("0.0120"), D("0.0120")),
        (D("250.5"), D("0.0120"), D("3.006")),
        (D("0.0000000001"), D("0.0000000001"), D("1E-20")),  # exact far below a cent
        (D("123456789012345678.1234567891"), D("0.1234567891"), D("15241578764060357.68038408857488187881")),
    ],
)
def test_flat_is_quantity_times_price_exactly(quantity, price, expected):
    segs = flat.segments(quantity, price)
    assert total(segs) == expected
    assert segs == ([] if not quantity else [Segment(quantity, price)])
