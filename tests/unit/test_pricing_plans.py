"""Plan files: YAML and TOML, exact numbers, validation errors that name file, line and field."""

from datetime import date
from decimal import Decimal as D
from pathlib import Path

import pytest

from keyledger.core.errors import Invalid
from keyledger.pricing.model import ByoPricing, Mode, Tier, TierMode
from keyledger.pricing.plans import load_plan_file, parse_plan_text, plan_from_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "keyledger" / "demo" / "plans"
TODAY = date(2026, 3, 15)

PRODUCT_EXAMPLE = """\
id: growth
name: Growth
currency: USD
mode: rate_card            # pass_through | cost_plus | rate_card
markup_percent: 0          # cost_plus only
base_fee: "49.00"          # per period
minimum: "0.00"            # minimum usage charge per period
tax_percent: "0"
rates:                     # rate_card: patterns over line items, most specific wins
  "streaming::nova-3":   {unit: minute, price: "0.0120"}
  "prerecorded::*": {unit: minute, tiers: [{up_to: 1000, price: "0.0080"}, {up_to: null, price: "0.0060"}],
    tier_mode: graduated}
  "tts::aura-2*":        {unit: 1k_characters, price: "0.0450"}
included:                  # free quantity per period, per pattern
  "streaming::*": 100
"""


def yaml_plan(text: str, name: str = "plans/growth.yaml"):
    return parse_plan_text(text, name=name, fmt="yaml", today=TODAY)


def test_the_product_spec_example_is_valid():
    plan = yaml_plan(PRODUCT_EXAMPLE)
    assert plan.id == "growth" and plan.mode is Mode.RATE_CARD and plan.currency == "USD"
    assert plan.base_fee == D("49.00") and plan.minimum == 0
    assert plan.effective_from == TODAY  # default: today
    pre = plan.rate_for("prerecorded::nova-3")
    assert pre.tier_mode is TierMode.GRADUATED
    assert pre.tiers == (Tier(D(1000), D("0.0080")), Tier(None, D("0.0060")))
    assert plan.included_for("streaming::nova-2").quantity == 100
    assert plan.byo_pricing is ByoPricing.ZERO


@pytest.mark.parametrize("path", sorted(EXAMPLES.iterdir()), ids=lambda p: p.name)
def test_examples_are_valid_and_round_trip(path):
    plan, source, fmt = load_plan_file(path, today=TODAY)
    assert fmt in ("yaml", "toml") and source
    again = plan_from_dict(plan.to_dict())
    assert again == plan


def test_examples_cover_the_three_modes():
    modes = {load_plan_file(p, today=TODAY)[0].mode for p in EXAMPLES.iterdir()}
    assert modes == set(Mode)


def test_unquoted_yaml_decimals_are_read_from_the_source_text_exactly():
    plan = yaml_plan(PRODUCT_EXAMPLE.replace('price: "0.0120"', "price: 0.0120").replace(
        '"49.00"', "49.10"))
    rate = plan.rate_for("streaming::nova-3")
    assert rate.price == D("0.0120") and str(rate.price) == "0.0120"  # not 0.012 via a float
    assert plan.base_fee == D("49.10")
    # 0.1 + 0.2 as floats is 0.30000000000000004; read from text it is exact
    p = yaml_plan(PRODUCT_EXAMPLE.replace('price: "0.0120"', "price: 0.1000000001"))
    assert p.rate_for("streaming::nova-3").price == D("0.1000000001")


def test_toml_plan_equals_the_same_yaml_plan():
    toml = """
id = "growth"
name = "Growth"
currency = "USD"
mode = "rate_card"
base_fee = 49.00
effective_from = 2026-03-15
[rates."streaming::nova-3"]
unit = "minute"
price = 0.0120
[rates."prerecorded::*"]
unit = "minute"
tier_mode = "graduated"
tiers = [{up_to = 1000, price = "0.0080"}, {price = "0.0060"}]
[rates."tts::aura-2*"]
unit = "1k_characters"
price = "0.0450"
[included]
"streaming::*" = 100
"""
    plan = parse_plan_text(toml, name="g.toml", fmt="toml", today=TODAY)
    assert plan.same_terms(yaml_plan(PRODUCT_EXAMPLE))
    assert plan.rate_for("streaming::nova-3").price == D("0.0120")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (("{up_to: null, price: \"0.0060\"}", "{up_to: 900, price: \"0.0060\"}, {price: \"0.005\"}"),
         'plans/growth.yaml:11: rates."prerecorded::*".tiers[1].up_to: must be greater than 1000'),
        (("price: \"0.0120\"", "price: \"0.01234567891\""),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: at most 10 decimal places in a unit price'),
        (("price: \"0.0120\"", "price: 1.2e-2"),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: must be a decimal number'),
        (("price: \"0.0120\"", "price: .inf"),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: must be a decimal number'),
        (("price: \"0.0120\"", "price: 0x1f"),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: must be a decimal number'),
        (("price: \"0.0120\"", "price: \"-1\""),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: must not be negative'),
        (("price: \"0.0120\"", "price: yes"),
         'plans/growth.yaml:10: rates."streaming::nova-3".price: must be a number'),
        (("{unit: minute, price: \"0.0120\"}", "{unit: fortnight, price: \"0.0120\"}"),
         'plans/growth.yaml:10: rates."streaming::nova-3".unit: must be one of second, minute, hour'),
        (("{unit: minute, price: \"0.0120\"}", "{unit: minute}"),
         'plans/growth.yaml:10: rates."streaming::nova-3": give either price or tiers'),
        (("{unit: minute, price: \"0.0120\"}", "{unit: minute, price: \"1\", tier_mode: volume}"),
         'plans/growth.yaml:10: rates."streaming::nova-3".tier_mode: only with tiers'),
        ((",\n    tier_mode: graduated", ""),
         'plans/growth.yaml:11: rates."prerecorded::*": tier_mode: required'),
        (("tier_mode: graduated", "tier_mode: stepped"),
         'plans/growth.yaml:12: rates."prerecorded::*".tier_mode: must be one of graduated, volume'),
        (("{up_to: null, price: \"0.0060\"}", "{up_to: 2000, price: \"0.0060\"}"),
         'plans/growth.yaml:11: rates."prerecorded::*".tiers[1].up_to: the last tier must be unbounded'),
        (("{up_to: 1000, price", "{up_to: null, price"),
         'plans/growth.yaml:11: rates."prerecorded::*".tiers[0].up_to: only the last tier may be unbounded'),
        (("{up_to: 1000, price", "{up_to: 0, price"),
         'plans/growth.yaml:11: rates."prerecorded::*".tiers[0].up_to: must be greater than 0'),
        (("{up_to: 1000, price: \"0.0080\"}", "{up_to: 1000}"),
         'plans/growth.yaml:11: rates."prerecorded::*".tiers[0]: price: required'),
        (("base_fee: \"49.00\"", "base_fee: \"49.001\""),
         "plans/growth.yaml:6: base_fee: at most 2 decimal places for USD"),
        (("currency: USD", "currency: usd"), "plans/growth.yaml:3: currency: must be an ISO 4217 code"),
        (("mode: rate_card", "mode: tiered"), "plans/growth.yaml:4: mode: must be one of pass_through"),
        (("markup_percent: 0", "markup_percent: 10"),
         "plans/growth.yaml:5: markup_percent: only for mode cost_plus"),
        (("tax_percent: \"0\"", "tax_percent: \"101\""),
         "plans/growth.yaml:8: tax_percent: must be at most 100"),
        (("tax_percent: \"0\"", "tax_pecrent: \"0\""), "plans/growth.yaml:8: tax_pecrent: unknown field"),
        (("  \"streaming::*\": 100", "  \"streaming::*\": -5"),
         'plans/growth.yaml:15: included."streaming::*": must not'),
        (("id: growth", "id: \"growth plan\""), "plans/growth.yaml:1: id: letters, digits"),
        (("id: growth\n", ""), "plans/growth.yaml:1: id: required"),
        (("rates:  ", "effective_from: 2026-13-01\nrates:  "),
         "plans/growth.yaml:9: effective_from: not a valid value"),
        (("rates:  ", "effective_from: 2026-03-01T10:00:00Z\nrates:  "),
         "plans/growth.yaml:9: effective_from: must be a date (YYYY-MM-DD), not a date and time"),
        (("rates:  ", "exchange_rates: {\"2026-1\": \"0.9\"}\nrates:  "),
         'plans/growth.yaml:9: exchange_rates."2026-1": periods are named YYYY-MM'),
        (("rates:  ", "exchange_rates: {\"2026-01\": 0}\nrates:  "),
         'plans/growth.yaml:9: exchange_rates."2026-01": must be greater than 0'),
        (("rates:  ", "byo_pricing: free\nrates:  "),
         "plans/growth.yaml:9: byo_pricing: must be one of zero, plan"),
        (("name: Growth", "name: Growth\nname: Again"), "plans/growth.yaml:3: name: given twice"),
        (("{unit: minute, price: \"0.0120\"}", "{unit: minute, price: \"0.0120\""),
         "plans/growth.yaml:11: not valid YAML"),
    ],
)
def test_yaml_validation_errors_name_file_line_and_field(edit, error):
    old, new = edit
    assert old in PRODUCT_EXAMPLE
    with pytest.raises(Invalid) as exc:
        yaml_plan(PRODUCT_EXAMPLE.replace(old, new, 1))
    assert str(exc.value).startswith(error), str(exc.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("id: x\ncurrency: USD\nmode: rate_card\n", "p.yaml:1: rates: required for mode rate_card"),
        ("id: x\ncurrency: USD\nmode: pass_through\nrates: {\"*\": {unit: minute, price: \"1\"}}\n",
         "p.yaml:4: rates: only for mode rate_card"),
        ("id: x\ncurrency: USD\nmode: cost_plus\nincluded: {\"*\": 5}\n",
         "p.yaml:4: included: only for mode rate_card"),
        ("id: x\ncurrency: JPY\nmode: pass_through\nbase_fee: \"100.5\"\n",
         "p.yaml:4: base_fee: at most 0 decimal places for JPY"),
        ("", "p.yaml: the plan file is empty"),
        ("- a\n- b\n", "p.yaml:1: (plan): must be a mapping"),
    ],
)
def test_mode_rules(text, error):
    with pytest.raises(Invalid) as exc:
        parse_plan_text(text, name="p.yaml", fmt="yaml", today=TODAY)
    assert str(exc.value).startswith(error), str(exc.value)


def test_floats_given_in_a_dict_are_refused_with_a_hint_to_quote():
    with pytest.raises(Invalid, match=r'base_fee: give an exact decimal, quoted \("0.1"\)'):
        plan_from_dict({"id": "x", "currency": "USD", "mode": "pass_through", "base_fee": 0.1,
                        "effective_from": "2026-01-01"})


TOML = """\
id = "eu"
currency = "EUR"
mode = "rate_card"

[exchange_rates]
"2026-01" = "0.92"

[rates."sync::*"]
unit = "minute"
tier_mode = "volume"
tiers = [
  {up_to = 1000, price = "0.0080"},
  {up_to = 900, price = "0.0070"},
  {price = "0.0060"},
]
"""


def test_toml_errors_find_the_line_of_the_field():
    with pytest.raises(Invalid) as exc:
        parse_plan_text(TOML, name="plans/eu.toml", fmt="toml", today=TODAY)
    assert str(exc.value) == 'plans/eu.toml:12: rates."sync::*".tiers[1].up_to: must be greater than 1000'
    with pytest.raises(Invalid) as exc:
        parse_plan_text(TOML.replace('"0.92"', '"-1"').replace("up_to = 900", "up_to = 1900"),
                        name="plans/eu.toml", fmt="toml", today=TODAY)
    assert str(exc.value) == 'plans/eu.toml:6: exchange_rates."2026-01": must be greater than 0'
    with pytest.raises(Invalid) as exc:
        parse_plan_text(TOML.replace('unit = "minute"', 'unit = minute'), name="plans/eu.toml", fmt="toml",
                        today=TODAY)
    assert str(exc.value).startswith("plans/eu.toml:9: not valid TOML")


def test_toml_floats_are_exact():
    text = TOML.replace('{up_to = 900, price = "0.0070"}', "{up_to = 5000, price = 0.0070}")
    plan = parse_plan_text(text, name="eu.toml", fmt="toml", today=TODAY)
    assert plan.rates[0].tiers[1].price == D("0.0070") and isinstance(plan.rates[0].tiers[1].price, D)
    assert plan.exchange_rates == (("2026-01", D("0.92")),)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(Invalid, match="a plan file is .yaml, .yml or .toml"):
        load_plan_file(tmp_path / "plan.json", today=TODAY)
    with pytest.raises(Invalid, match="no such file"):
        load_plan_file(tmp_path / "plan.yaml", today=TODAY)
