"""The price check's pure rules: the price-list file, tiers and effective dates, the tolerance, unknown line
items, and the summary per line item — Decimal only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from keyledger.core.errors import Invalid
from keyledger.provider.deepgram.prices import BUILT_IN, load_price_list, parse_price_list
from keyledger.usage.price_check import (
    LedgerRecord,
    PriceCheckConfig,
    Tolerance,
    brief,
    check_record,
    summarize,
)

PRICES = """
currency = "USD"

[[price]]
line_item = "streaming::nova-3"
unit = "minute"
price = "0.0048"
effective_from = 2026-05-01

[[price]]
line_item = "streaming::nova-3"
unit = "minute"
price = "0.0050"
effective_from = 2026-11-15

[[price]]
line_item = "streaming::nova-3"
tier = "growth"
unit = "minute"
price = "0.0042"

[[price]]
line_item = "sync::aura-2"
unit = "1k_characters"
price = "0.030"

[[price]]
line_item = "async::nova-3"
unit = "hour"
price = "0.258"
"""


def at(day: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, 12, 0, tzinfo=UTC)


def on(day: int, month: int = 11) -> date:
    return date(2026, month, day)


def rec(line_item: str, unit: str, quantity: str, usd: str, day: date, rid="r") -> LedgerRecord:
    return LedgerRecord(rid, line_item, unit, Decimal(quantity), Decimal(usd), day)


@pytest.fixture
def config() -> PriceCheckConfig:
    return PriceCheckConfig(parse_price_list(PRICES, "test.toml"))


def test_effective_dates_pick_the_entry_in_effect_on_the_records_utc_day(config):
    prices = config.prices
    assert prices.price_at("streaming::nova-3", "pay-as-you-go", at(14)).price == Decimal("0.0048")
    assert prices.price_at("streaming::nova-3", "pay-as-you-go", at(15)).price == Decimal("0.0050")
    # 23:30 at UTC-05:00 on the 14th is already the 15th in UTC
    late = datetime.fromisoformat("2026-11-14T23:30:00-05:00")
    assert prices.price_at("streaming::nova-3", "pay-as-you-go", late).price == Decimal("0.0050")
    assert prices.price_at("streaming::nova-3", "pay-as-you-go", at(30, 4)) is None  # before the first entry
    assert prices.price_at("streaming::nova-3", "growth", at(30, 4)).price == Decimal("0.0042")  # always


def test_expected_cost_is_exact_in_the_price_unit(config):
    minutes = check_record(rec("streaming::nova-3", "minute", "2.5", "0.012", on(3)), config)
    assert minutes.expected_usd == Decimal("0.01200") and not minutes.disagrees
    chars = check_record(rec("sync::aura-2", "character", "1234", "0.03702", on(3)), config)
    assert chars.expected_usd == Decimal("0.03702") and not chars.disagrees
    hours = check_record(rec("async::nova-3", "minute", "30", "0.129", on(3)), config)
    assert hours.expected_usd == Decimal("0.129") and not hours.disagrees
    assert all(isinstance(c.expected_usd, Decimal) for c in (minutes, chars, hours))


def test_tier_changes_the_expected_price(config):
    growth = PriceCheckConfig(config.prices, tier="growth")
    r = rec("streaming::nova-3", "minute", "10", "0.048", on(3))
    assert check_record(r, growth).expected_usd == Decimal("0.0420")
    assert check_record(r, growth).disagrees  # Deepgram billed the pay-as-you-go price
    assert not check_record(r, config).disagrees
    with pytest.raises(Invalid, match="tier 'enterprise' is not in the price list"):
        PriceCheckConfig(config.prices, tier="enterprise")


def test_tolerance_absorbs_rounding_and_flags_a_price_change():
    t = Tolerance()
    expected = Decimal("0.0048") * Decimal("0.1234567891") # 0.00059259258768
    assert not t.disagrees(Decimal("0.000593"), expected)  # Deepgram rounded to 6 places
    assert t.disagrees(Decimal("0.0043") * Decimal("0.1234567891"), expected)  # the old list price
    # tiny records: the absolute bound, not 1 % of almost nothing
    assert not t.disagrees(Decimal("0.0000015"), Decimal("0.000001"))
    assert t.disagrees(Decimal("0.0000021"), Decimal("0.000001"))
    # the boundary itself agrees; a hair beyond disagrees
    assert not t.disagrees(Decimal("1.01"), Decimal("1"))
    assert t.disagrees(Decimal("1.0100000001"), Decimal("1"))
    strict = Tolerance.parse("0", "0")
    assert strict.disagrees(Decimal("1.0000000001"), Decimal("1"))
    assert not strict.disagrees(Decimal("1"), Decimal("1.0"))


def test_tolerance_settings_are_exact_decimals():
    assert Tolerance.parse("0.005", "0.02") == Tolerance(Decimal("0.005"), Decimal("0.02"))
    with pytest.raises(Invalid, match="not a decimal"):
        Tolerance.parse("half a cent", "0.01")
    with pytest.raises(Invalid, match="must not be negative"):
        Tolerance.parse("0.005", "-0.01")


def test_unknown_line_items_and_unit_mismatches_are_listed_not_guessed(config):
    assert check_record(rec("sync::nova-2", "minute", "5", "0.0215", on(3)), config).price is None
    # a price per character cannot price minutes
    assert check_record(rec("sync::aura-2", "minute", "5", "0.1", on(3)), config).price is None
    report = summarize(
        [
            rec("sync::nova-2", "minute", "5", "0.0215", on(3)),
            rec("sync::nova-2", "minute", "1", "0.0043", on(4)),
            rec("streaming::nova-3", "minute", "1", "0.0048", on(4)),
        ],
        config,
    )
    assert report["unknown_line_items"] == [
        {"line_item": "sync::nova-2", "unit": "minute", "records": 2, "provider_usd": Decimal("0.0258")}
    ]
    assert report["checked_records"] == 1 and report["agrees"]
    assert brief(report)["unknown_line_items"] == ["sync::nova-2"]


def test_summary_per_line_item_with_disagreeing_examples(config):
    records = [
        rec("streaming::nova-3", "minute", "10", "0.048", on(3), "a"),
        rec("streaming::nova-3", "minute", "10", "0.050", on(20), "b"),  # new price from the 15th
        rec("streaming::nova-3", "minute", "10", "0.060", on(21), "c"),  # wrong
        rec("sync::aura-2", "character", "1000", "0.030", on(5), "d"),
    ]
    report = summarize(records, config)
    nova = next(line for line in report["lines"] if line["line_item"] == "streaming::nova-3")
    assert nova["records"] == 3 and nova["disagreeing_records"] == 1
    assert nova["provider_usd"] == Decimal("0.158")
    assert nova["expected_usd"] == Decimal("0.148")
    assert nova["difference_usd"] == Decimal("0.010")
    assert [p["price"] for p in nova["list_prices"]] == [Decimal("0.0048"), Decimal("0.0050")]
    assert report["disagreeing_records"] == 1 and not report["agrees"]
    (example,) = report["disagreeing_examples"]
    assert example["request_id"] == "c"
    assert example["expected_usd"] == Decimal("0.0500") and example["difference_usd"] == Decimal("0.010")
    assert report["provider_usd"] == Decimal("0.188") and report["expected_usd"] == Decimal("0.178")
    for key in ("provider_usd", "expected_usd", "difference_usd"):
        assert isinstance(report[key], Decimal)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[price]]\nline_item = "sync::nova-3"\nunit = "minute"\nprice = 0.0043\n', "must be a string"),
        ('[[price]]\nline_item = "sync::nova-3"\nunit = "second"\nprice = "0.1"\n', "unit must be one of"),
        ('[[price]]\nline_item = "nova-3"\nunit = "minute"\nprice = "0.1"\n', "line_item must be"),
        ('[[price]]\nline_item = "sync::nova-3"\nunit = "minute"\nprice = "cheap"\n', "not a decimal"),
        ('[[price]]\nline_item = "sync::nova-3"\nunit = "minute"\nprice = "-1"\n', "non-negative"),
        (
            '[[price]]\nline_item = "sync::nova-3"\nunit = "minute"\nprice = "1"\neffective_from = "May"\n',
            "effective_from must be a date",
        ),
        ('currency = "EUR"\n[[price]]\nline_item = "sync::x"\nunit = "minute"\nprice = "1"\n', "USD"),
        ('currency = "USD"\n', "no \\[\\[price\\]\\] entries"),
        ("[[price]\n", "not valid TOML"),
        (
            '[[price]]\nline_item = "sync::x"\nunit = "minute"\nprice = "1"\n'
            '[[price]]\nline_item = "sync::x"\nunit = "minute"\nprice = "2"\n',
            "price #2: a second entry",
        ),
    ],
)
def test_bad_price_files_name_the_file_and_the_entry(text, message):
    with pytest.raises(Invalid, match=message) as err:
        parse_price_list(text, "rates.toml")
    assert "rates.toml" in str(err.value)


def test_the_built_in_list_loads_and_an_operator_file_replaces_it(tmp_path):
    built_in = load_price_list()
    assert built_in.origin == BUILT_IN and set(built_in.tiers) == {"pay-as-you-go", "growth"}
    nova = built_in.price_at("streaming::nova-3", "pay-as-you-go", date(2026, 11, 1))
    assert nova.price == Decimal("0.0048") and nova.unit == "minute" and "captured" in nova.source
    assert built_in.price_at("sync::nova-2", "pay-as-you-go", date(2026, 11, 1)) is None  # no dated source
    own = tmp_path / "negotiated.toml"
    own.write_text('[[price]]\nline_item = "streaming::nova-3"\nunit = "minute"\nprice = "0.0040"\n')
    mine = load_price_list(own)
    assert mine.origin == str(own)
    assert mine.price_at("streaming::nova-3", "pay-as-you-go", date(2026, 11, 1)).price == Decimal("0.0040")
    with pytest.raises(Invalid, match="cannot read it"):
        load_price_list(tmp_path / "missing.toml")


def test_the_built_in_list_agrees_with_the_emulator_where_both_have_a_price():
    """dgemu is an independent oracle with its own table; where both name a line item the demo must agree."""
    import json
    from importlib import resources

    text = resources.files("dgemu").joinpath("data/prices.json").read_text()
    items = json.loads(text, parse_float=Decimal)["items"]
    theirs = {i["line_item"]: (i["unit"], Decimal(str(i["price"]))) for i in items if "price" in i}
    ours = [e for e in load_price_list().entries if e.tier == "pay-as-you-go"]
    compared = 0
    for e in ours:
        if e.line_item in theirs:
            assert theirs[e.line_item] == (e.unit, e.price), e.line_item
            compared += 1
    assert compared >= 5
