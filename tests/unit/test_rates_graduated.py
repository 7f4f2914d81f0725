from decimal import Decimal as D

import pytest

from keyledger.pricing.model import Tier
from keyledger.pricing.rates import Segment, graduated, total

TIERS = (Tier(D(1000), D("0.0080")), Tier(D(5000), D("0.0070")), Tier(None, D("0.0060")))


@pytest.mark.parametrize(
    ("quantity", "start", "expected"),
    [
        (D(0), D(0), []),
        (D(1), D(0), [Segment(D(1), D("0.0080"), 1)]),
        (D(1000), D(0), [Segment(D(1000), D("0.0080"), 1)]),
        (D("1000.5"), D(0), [Segment(D(1000), D("0.0080"), 1), Segment(D("0.5"), D("0.0070"), 2)]),
        (D(6000), D(0), [Segment(D(1000), D("0.0080"), 1), Segment(D(4000), D("0.0070"), 2),
                         Segment(D(1000), D("0.0060"), 3)]),
        # a second line item under the same rate continues where the first stopped
        (D(700), D(600), [Segment(D(400), D("0.0080"), 1), Segment(D(300), D("0.0070"), 2)]),
        (D(50), D(1200), [Segment(D(50), D("0.0070"), 2)]),
        (D(10), D(9000), [Segment(D(10), D("0.0060"), 3)]),
    ],
)
def test_graduated_splits_by_tier(quantity, start, expected):
    assert graduated.segments(quantity, TIERS, start) == expected


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [(D(1000), D("8.0000")), (D(6000), D("8.0000") + D("28.0000") + D("6.0000")), (D("1000.1"), D("8.0007"))],
)
def test_graduated_amount(quantity, amount):
    assert total(graduated.segments(quantity, TIERS)) == amount


def test_split_across_line_items_costs_the_same_as_the_sum():
    whole = total(graduated.segments(D(6543), TIERS))
    parts = total(graduated.segments(D(2000), TIERS)) + total(graduated.segments(D(4543), TIERS, D(2000)))
    assert whole == parts


@pytest.mark.parametrize(
    ("position", "tier"),
    [(D(0), (1, D("0.0080"))), (D(999), (1, D("0.0080"))), (D(1000), (2, D("0.0070"))),
     (D(10**9), (3, D("0.0060")))],
)
def test_price_at_position(position, tier):
    assert graduated.price_at(position, TIERS) == tier
