"""The price check over the stored ledger (``keyledger usage price-check``, and the ``price_check`` part of
``keyledger reconcile``): run after sync, over a period, so the sync hot path pays nothing for it."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from keyledger.core.config import Settings
from keyledger.core.errors import NotFound
from keyledger.provider.deepgram.prices import load_price_list
from keyledger.usage import model, price_check, price_check_store, store


def config_from(settings: Settings) -> price_check.PriceCheckConfig:
    """The price list (built in, or ``KEYLEDGER_PROVIDER_PRICES``), tier and tolerance from settings."""
    return price_check.PriceCheckConfig(
        prices=load_price_list(settings.provider_prices),
        tier=settings.provider_price_tier,
        tolerance=price_check.Tolerance.parse(
            settings.price_check_absolute_usd, settings.price_check_relative
        ),
    )


def check_connections(
    conn: Connection,
    config: price_check.PriceCheckConfig,
    *,
    connection_ids: list[str],
    period: str,
    customer_id: str | None = None,
) -> dict:
    first, last = model.parse_period(period)
    records = price_check_store.period_records(
        conn, connection_ids=connection_ids, first=first, last=last, customer_id=customer_id
    )
    return price_check.summarize(records, config)


def price_check_report(
    engine: Engine,
    config: price_check.PriceCheckConfig,
    *,
    period: str,
    customer: str | None = None,
    connection: str | None = None,
) -> dict:
    """Every connection's records of the period (or one connection's, or one customer's)."""
    first, _last = model.parse_period(period)
    with engine.connect() as conn:
        customer_id = None
        if customer is not None:
            customer_id = store.find_customer_id(conn, customer)
            if customer_id is None:
                raise NotFound(f"no customer {customer!r}")
        if connection is not None:
            targets = [store.connection_named(conn, connection)]
        else:
            targets = store.list_connections(conn)
        report = check_connections(
            conn, config, connection_ids=[t.id for t in targets], period=period, customer_id=customer_id
        )
    return {
        "period": f"{first.year:04d}-{first.month:02d}",
        "customer_id": customer_id,
        "connection": ",".join(t.name for t in targets),
        **report,
    }
