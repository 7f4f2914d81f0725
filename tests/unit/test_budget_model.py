"""Pure budget rules: periods in the customer's time zone, thresholds once per period, projection, cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyledger.budgets import model
from keyledger.core.errors import Invalid

B = model.Budget("cus_1", Decimal("100"), (50, 80, 100), "revoke")
NOV = model.period_at(datetime(2026, 11, 15, tzinfo=UTC), "UTC")


def test_period_is_the_local_month():
    p = model.period_at(datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert p.key == "2026-12"  # already December in Berlin
    assert p.starts_at == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert p.ends_at == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    ny = model.period_at(datetime(2026, 3, 1, 3, 0, tzinfo=UTC), "America/New_York")
    assert ny.key == "2026-02" and ny.ends_at == datetime(2026, 3, 1, 5, 0, tzinfo=UTC)


def test_each_threshold_fires_once():
    d = model.evaluate(B, spent=Decimal("85"), period=NOV, now=NOV.starts_at + timedelta(days=29))
    assert d.fire == (50, 80) and d.state == "warning" and not d.enforce
    again = model.evaluate(B, spent=Decimal("90"), period=NOV, now=NOV.starts_at, fired=d.fired_after)
    assert again.fire == () and not again.enforce


def test_cap_enforces_once_with_revoke_and_not_with_notify():
    d = model.evaluate(B, spent=Decimal("100.00"), period=NOV, now=NOV.starts_at, fired=(50, 80))
    assert d.fire == (100,) and d.enforce and d.state == "revoke_pending"
    later = model.evaluate(
        B, spent=Decimal("150"), period=NOV, now=NOV.starts_at, fired=d.fired_after, state="revoked"
    )
    assert not later.enforce and later.fire == () and later.state == "revoked"
    n = model.evaluate(
        model.Budget("c", Decimal("100"), (50,), "notify"),
        spent=Decimal("120"),
        period=NOV,
        now=NOV.starts_at,
    )
    assert n.fire == (50,) and not n.enforce and n.state == "exceeded" and 100 in n.fired_after


def test_cap_acts_even_when_100_is_not_an_alert_threshold():
    b = model.Budget("c", Decimal("10"), (50, 80), "revoke")
    d = model.evaluate(b, spent=Decimal("10.01"), period=NOV, now=NOV.starts_at)
    assert d.fire == (50, 80) and d.enforce


def test_projection_waits_for_a_tenth_of_the_period_then_extrapolates():
    early = NOV.starts_at + timedelta(days=2)
    assert model.evaluate(B, spent=Decimal("30"), period=NOV, now=early).projected is None
    mid = NOV.starts_at + timedelta(days=10)  # a third of November
    d = model.evaluate(B, spent=Decimal("40"), period=NOV, now=mid)
    assert d.projected == Decimal("120") and d.fire == ()
    assert model.evaluate(B, spent=Decimal("40"), period=NOV, now=mid, projected_fired=True).projected is None
    assert model.evaluate(B, spent=Decimal("30"), period=NOV, now=mid).projected is None  # 90 < 100


@pytest.mark.parametrize("text", ["0", "-5", "abc", "1e400", "0.00000000001", "NaN"])
def test_bad_limits(text):
    with pytest.raises(Invalid):
        model.parse_limit(text)


@pytest.mark.parametrize("text", ["", "50,,x", "0", "50,50", "2000"])
def test_bad_thresholds(text):
    with pytest.raises(Invalid):
        model.parse_thresholds(text)


def test_thresholds_sorted_and_default():
    assert model.parse_thresholds("100, 50,80") == (50, 80, 100)
    assert model.parse_thresholds(None) == (50, 80, 100)


@given(st.lists(st.decimals(min_value=0, max_value=1000, places=4), min_size=1, max_size=20))
def test_any_history_fires_each_threshold_at_most_once(increments):
    fired: tuple[int, ...] = ()
    state = "ok"
    spent = Decimal(0)
    seen: list[int] = []
    enforced = 0
    for inc in increments:
        spent += inc
        d = model.evaluate(B, spent=spent, period=NOV, now=NOV.starts_at, fired=fired, state=state)
        seen += d.fire
        enforced += d.enforce
        fired, state = d.fired_after, d.state
    assert len(seen) == len(set(seen))
    assert set(seen) == {t for t in B.thresholds if spent * 100 / B.limit >= t}
    assert enforced == (1 if spent >= B.limit else 0)
