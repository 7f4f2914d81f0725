from decimal import Decimal as D

import pytest

from keyledger.pricing.model import Tier
from keyledger.pricing.rates import Segment, total, volume

TIERS = (Tier(D(5000), D("0.0070")), Tier(D(20000), D("0.0060")), Tier(None, D("0.0050")))


@pytest.mark.parametrize(
    ("quantity", "reached", "expected"),
    [
        (D(0), None, []),
        (D(1), None, [Segment(D(1), D("0.0070"), 1)]),
        (D(5000), None, [Segment(D(5000), D("0.0070"), 1)]),  # bounds are inclusive
        (D("5000.0000000001"), None, [Segment(D("5000.0000000001"), D("0.0060"), 2)]),
        (D(20001), None, [Segment(D(20001), D("0.0050"), 3)]),
        # a line item under a rate whose line items together reached tier 2
        (D(100), D(6000), [Segment(D(100), D("0.0060"), 2)]),
    ],
)
def test_volume_prices_every_unit_at_the_reached_tier(quantity, reached, expected):
    assert volume.segments(quantity, TIERS, reached) == expected


@pytest.mark.parametrize(
    ("reached", "tier"),
    [(D(0), (1, D("0.0070"))), (D(5000), (1, D("0.0070"))), (D(5001), (2, D("0.0060"))),
     (D(10**12), (3, D("0.0050")))],
)
def test_reached_tier(reached, tier):
    assert volume.reached_tier(reached, TIERS) == tier


def test_volume_can_cost_less_for_more():  # the well-known cliff of volume pricing, kept as specified
    assert total(volume.segments(D(5001), TIERS)) < total(volume.segments(D(5000), TIERS))
