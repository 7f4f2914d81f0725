"""The price check over the stored ledger on SQLite and PostgreSQL: the period's UTC boundaries, the
connection and customer filters, exact decimals out of the database, and the report the CLI prints."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from keyledger.core.errors import Invalid, NotFound
from keyledger.provider.deepgram.prices import parse_price_list
from keyledger.provider.port import UsageRecord
from keyledger.usage import price_check_service, price_check_store, store
from keyledger.usage.price_check import PriceCheckConfig
from tests.usage_support import add_connection, add_customer, add_key

NOW = datetime(2026, 12, 3, tzinfo=UTC)
PRICES = parse_price_list(
    '[[price]]\nline_item = "streaming::nova-3"\nunit = "minute"\nprice = "0.0048"\n'
    '[[price]]\nline_item = "sync::aura-2"\nunit = "1k_characters"\nprice = "0.030"\n',
    "test.toml",
)


def rec(rid, created, key="dg-a", item="streaming::nova-3", unit="minute", qty="2.5", usd="0.012"):
    return UsageRecord(
        rid, key, created, "listen", "streaming", "nova-3", item, unit, Decimal(qty), Decimal(usd), 200, ()
    )


def insert(engine, records, cid="con_1", batch="b1"):
    with engine.begin() as conn:
        store.insert_records(
            conn, connection_id=cid, records=records, keys_by_accessor=store.key_map(conn, cid),
            batch=batch, synced_at=NOW,
        )


@pytest.fixture
def ledger(engine):
    add_connection(engine)
    add_connection(engine, cid="con_2", name="second")
    add_customer(engine, "cus_a")
    add_customer(engine, "cus_b")
    add_key(engine, "key_a", "cus_a", "con_1", "dg-a")
    add_key(engine, "key_b", "cus_b", "con_1", "dg-b")
    add_key(engine, "key_c", "cus_a", "con_2", "dg-c")
    first = datetime(2026, 11, 1, tzinfo=UTC)
    next_month = datetime(2026, 12, 1, tzinfo=UTC)
    insert(
        engine,
        [
            rec("edge-start", first),
            rec("edge-end", next_month - timedelta(microseconds=1), key="dg-b"),
            rec("next-month", next_month),
            rec("prev-month", first - timedelta(microseconds=1)),
            # exact decimals: 123456.789 minutes at 0.0048 = 592.5925872 (Deepgram says 1e-10 less)
            rec("big", first + timedelta(days=3), qty="123456.7890000000", usd="592.5925871999"),
            rec("wrong", first + timedelta(days=4), key="dg-b", item="sync::aura-2", unit="character",
                qty="1000", usd="0.0315"),
            rec("unpriced", first + timedelta(days=5), item="sync::nova-2", qty="1", usd="0.0043"),
        ],
    )
    insert(engine, [rec("other-conn", first + timedelta(days=1), key="dg-c")], cid="con_2", batch="b2")
    return engine


def test_period_records_keep_utc_boundaries_and_exact_decimals(ledger):
    with ledger.connect() as conn:
        got = {
            r.request_id: r
            for r in price_check_store.period_records(
                conn, connection_ids=["con_1"], first=datetime(2026, 11, 1).date(),
                last=datetime(2026, 11, 30).date(),
            )
        }
    assert set(got) == {"edge-start", "edge-end", "big", "wrong", "unpriced"}
    big = got["big"]
    assert big.quantity == Decimal("123456.7890000000") and big.cost_usd == Decimal("592.5925871999")
    assert isinstance(big.quantity, Decimal) and isinstance(big.cost_usd, Decimal)
    assert (got["edge-start"].day, got["edge-end"].day) == (date(2026, 11, 1), date(2026, 11, 30))


def test_report_per_line_item_connection_and_customer(ledger):
    config = PriceCheckConfig(PRICES)
    report = price_check_service.price_check_report(ledger, config, period="2026-11")
    assert report["connection"] == "main,second"
    lines = {line["line_item"]: line for line in report["lines"]}
    nova = lines["streaming::nova-3"]
    assert nova["records"] == 4  # edge-start, edge-end, big, other-conn
    assert nova["expected_usd"] == Decimal("0.012") * 3 + Decimal("592.5925872")
    assert nova["disagreeing_records"] == 0  # 1e-10 of rounding is within the tolerance
    assert lines["sync::aura-2"]["disagreeing_records"] == 1
    assert report["disagreeing_examples"][0]["request_id"] == "wrong"
    assert report["disagreeing_examples"][0]["expected_usd"] == Decimal("0.030")
    assert report["unknown_line_items"] == [
        {"line_item": "sync::nova-2", "unit": "minute", "records": 1, "provider_usd": Decimal("0.0043")}
    ]

    one_conn = price_check_service.price_check_report(ledger, config, period="2026-11", connection="second")
    assert one_conn["checked_records"] == 1 and one_conn["connection"] == "second"

    cus_b = price_check_service.price_check_report(ledger, config, period="2026-11", customer="ext-cus_b")
    assert cus_b["customer_id"] == "cus_b"
    assert {line["line_item"]: line["records"] for line in cus_b["lines"]} == {
        "streaming::nova-3": 1, "sync::aura-2": 1
    }
    december = price_check_service.price_check_report(ledger, config, period="2026-12")
    assert december["checked_records"] == 1 and december["agrees"]


def test_unknown_customer_and_bad_period_are_refused(ledger):
    with pytest.raises(NotFound):
        price_check_service.price_check_report(ledger, PriceCheckConfig(PRICES), period="2026-11",
                                               customer="nobody")
    with pytest.raises(Invalid, match="is not a month"):
        price_check_service.price_check_report(ledger, PriceCheckConfig(PRICES), period="2026-1")
