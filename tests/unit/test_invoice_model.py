"""Pure invoice rules: the transition table, numbers, period bounds in a time zone, exact display."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from keyledger.core.errors import Conflict, Invalid
from keyledger.invoices.model import (
    TRANSITIONS,
    Action,
    Status,
    check_credit,
    format_number,
    local_bounds,
    local_month,
    money_str,
    num_str,
    remaining,
    transition,
    validate_prefix,
)

ALLOWED = {
    (Action.REBUILD, Status.DRAFT): Status.DRAFT,
    (Action.FINALIZE, Status.DRAFT): Status.FINALIZED,
    (Action.MARK_PAID, Status.FINALIZED): Status.PAID,
    (Action.VOID, Status.FINALIZED): Status.VOID,
    (Action.CREDIT, Status.FINALIZED): Status.FINALIZED,
    (Action.CREDIT, Status.PAID): Status.PAID,
}


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("status", list(Status))
def test_every_transition(action, status):
    if (action, status) in ALLOWED:
        assert transition(status, action, "INV-1") is ALLOWED[(action, status)]
    else:
        with pytest.raises(Conflict, match=f"cannot {action.value} invoice INV-1"):
            transition(status.value, action, "INV-1")


def test_table_is_exactly_the_documented_one():
    assert TRANSITIONS == ALLOWED
    # Nothing ever leaves paid or void, and nothing returns to draft.
    assert not [k for k, v in TRANSITIONS.items() if k[1] in (Status.PAID, Status.VOID) and v != k[1]]
    assert not [k for k, v in TRANSITIONS.items() if v is Status.DRAFT and k[1] is not Status.DRAFT]


def test_numbers():
    assert format_number("INV", 2026, 1) == "INV-2026-000001"
    assert format_number("CN", 2027, 123456) == "CN-2027-123456"
    assert validate_prefix(" INV ") == "INV"
    for bad in ("", "A-B", "x" * 21, "IN V"):
        with pytest.raises(Invalid):
            validate_prefix(bad)


def test_local_bounds_follow_the_zone_and_dst():
    assert local_bounds(date(2026, 1, 1), date(2026, 2, 1), "UTC") == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    # New York: EST (-5) on March 1, EDT (-4) on April 1.
    assert local_bounds(date(2026, 3, 1), date(2026, 4, 1), "America/New_York") == (
        datetime(2026, 3, 1, 5, tzinfo=UTC),
        datetime(2026, 4, 1, 4, tzinfo=UTC),
    )
    assert local_bounds(date(2026, 1, 1), date(2026, 2, 1), "Asia/Kolkata")[0] == datetime(
        2025, 12, 31, 18, 30, tzinfo=UTC
    )
    assert local_month(datetime(2026, 2, 1, 3, tzinfo=UTC), "America/New_York") == "2026-01"
    with pytest.raises(Invalid, match="time zone"):
        local_bounds(date(2026, 1, 1), date(2026, 2, 1), "Mars/Olympus")


def test_display_is_exact_never_rounded():
    assert money_str(Decimal("12.3000000000"), "USD") == "12.30"
    assert money_str(Decimal("7"), "JPY") == "7"
    assert money_str(Decimal("-1.5"), "KWD") == "-1.500"
    with pytest.raises(ArithmeticError):
        money_str(Decimal("0.005"), "USD")  # an unrounded amount is a bug, not something to hide
    assert num_str(Decimal("0.0430000000")) == "0.043"
    assert num_str(Decimal("10.0000000000")) == "10"
    assert num_str(Decimal("1E+3")) == "1000"
    assert num_str(None) is None


def test_credit_limits():
    left = remaining(Decimal("15"), Decimal("1.5"), [(Decimal("2.5"), Decimal("0.25"))])
    assert (left.subtotal, left.tax, left.total) == (Decimal("12.5"), Decimal("1.25"), Decimal("13.75"))
    check_credit(Decimal("12.5"), Decimal("1.25"), left, "USD", "INV-1")
    with pytest.raises(Conflict, match="exceeds"):
        check_credit(Decimal("12.51"), Decimal("0"), left, "USD", "INV-1")
    with pytest.raises(Invalid, match="positive"):
        check_credit(Decimal("0"), Decimal("0"), left, "USD", "INV-1")
