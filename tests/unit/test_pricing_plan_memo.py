"""Per-version caches of rate lookups (``Plan.memo``): one version's cache never answers for another, a
copy made with ``replace`` starts empty, equality ignores the cache, and a lookup that fails fails every
time (errors are not cached)."""

from dataclasses import replace
from datetime import date
from decimal import Decimal as D

import pytest

from keyledger.core.errors import Invalid
from keyledger.pricing.model import Period, Plan, UsageLine
from keyledger.pricing.plans import parse_plan_text
from keyledger.pricing.rate import rate_usage

OCT = Period.month("2026-10")


def plan(text: str) -> Plan:
    return parse_plan_text(text, name="p.yaml", fmt="yaml", today=date(2026, 1, 1))


V1 = plan("""
id: card
currency: USD
mode: rate_card
markup_percent: 0
rates:
  "streaming::*": {unit: minute, price: "0.0100"}
included:
  "streaming::*": 10
""")
V2 = plan("""
id: card
currency: USD
mode: rate_card
rates:
  "streaming::*": {unit: minute, price: "0.0100"}
  "streaming::nova-3": {unit: hour, price: "0.9000"}
""")
USAGE = [UsageLine("streaming::nova-3", "minute", D("120"), D("0.5"))]


def test_two_versions_in_one_run_keep_their_own_lookups():
    for _ in range(3):  # interleaved, as a run meets customers on either version
        a, b = rate_usage(V1, OCT, USAGE), rate_usage(V2, OCT, USAGE)
        assert [(x.kind, x.unit, x.quantity, x.amount) for x in a.lines] == [
            ("included", "minute", D("10"), D("0.00")),
            ("usage", "minute", D("110"), D("1.10")),
        ]
        assert [(x.kind, x.unit, x.quantity, x.amount) for x in b.lines] == [
            ("usage", "hour", D("2"), D("1.80")),
        ]
    assert V1.rate_for("streaming::nova-3").unit == "minute"
    assert V2.rate_for("streaming::nova-3").unit == "hour"


def test_replace_starts_a_fresh_cache_and_equality_ignores_it():
    assert V1.rate_for("streaming::nova-3").pattern.text == "streaming::*"
    other = replace(V1, rates=V2.rates)
    assert other.rate_for("streaming::nova-3").pattern.text == "streaming::nova-3"
    fresh = plan(
        "id: card\ncurrency: USD\nmode: rate_card\nmarkup_percent: 0\nrates:\n"
        '  "streaming::*": {unit: minute, price: "0.0100"}\nincluded:\n  "streaming::*": 10\n'
    )
    assert fresh == V1 and hash(fresh) == hash(V1)  # V1's cache is filled, fresh's is empty


def test_a_failing_lookup_fails_every_time():
    tie = plan("""
id: tie
currency: USD
mode: rate_card
rates:
  "a*b*": {unit: minute, price: "1"}
  "a**b": {unit: minute, price: "2"}
  "b": {unit: minute, price: "3"}
""")
    for _ in range(2):
        with pytest.raises(Invalid, match="equally"):
            rate_usage(tie, OCT, [UsageLine("ab", "minute", D("1"), D("0"))])
        with pytest.raises(Invalid, match="no rate"):
            rate_usage(tie, OCT, [UsageLine("c", "minute", D("1"), D("0"))])
        assert rate_usage(tie, OCT, [UsageLine("b", "minute", D("1"), D("0"))]).total == D("3.00")
