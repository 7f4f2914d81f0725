"""Helpers for the invoice tests: real services and stores seed plans, customers, keys and usage."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import Engine

from keyledger.core.clock import FrozenClock
from keyledger.customers.service import CustomerService
from keyledger.invoices.service import InvoiceService
from keyledger.pricing.service import import_plan_text
from keyledger.provider.port import UsageRecord
from keyledger.usage import store as usage_store
from tests.usage_support import add_connection, add_key

FLAT = """
id: flat
name: Flat
currency: USD
mode: rate_card
tax_percent: "10"
effective_from: 2025-01-01
rates:
  "streaming::nova-3": {unit: minute, price: "0.0100"}
  "sync::*": {unit: minute, price: "0.0050"}
"""

TIERED = """
id: tiered
name: Tiered
currency: USD
mode: rate_card
base_fee: "10.00"
minimum: "5.00"
tax_percent: "0"
effective_from: 2025-01-01
rates:
  "streaming::nova-3":
    unit: minute
    tier_mode: graduated
    tiers:
      - {up_to: 100, price: "0.0200"}
      - {up_to: null, price: "0.0100"}
  "sync::*": {unit: minute, price: "0.0050"}
included:
  "streaming::*": 10
"""

EURO = """
id: euro
name: Euro
currency: EUR
mode: cost_plus
markup_percent: "20"
tax_percent: "19"
effective_from: 2025-01-01
exchange_rates: {"2026-01": "0.9", "2026-02": "0.8", "2026-03": "0.85"}
"""

_seq = itertools.count(1)


class World:
    """A database with plans, and helpers to add customers with keys and usage."""

    def __init__(self, engine: Engine, at: datetime | None = None) -> None:
        self.engine = engine
        self.clock = FrozenClock(at or datetime(2026, 3, 5, 12, tzinfo=UTC))
        deps = SimpleNamespace(engine=engine, clock=self.clock)
        self.customers = CustomerService(deps)
        for text, name in ((FLAT, "flat.yaml"), (TIERED, "tiered.yaml"), (EURO, "euro.yaml")):
            import_plan_text(engine, text, name=name, clock=self.clock)
        self.managed = add_connection(engine, "con_m", "main")
        self.byo: dict[str, str] = {}
        self.accessor: dict[str, str] = {}
        self.byo_accessor: dict[str, str] = {}
        self.service = InvoiceService(engine, self.clock)

    def customer(
        self, ext: str, plan: str | None = "flat", tz: str = "UTC", currency: str = "USD", byo: bool = False
    ) -> str:
        c = self.customers.add(ext, external_id=ext, plan=plan, timezone=tz, currency=currency)
        n = next(_seq)
        add_key(self.engine, f"key_{ext}", c.id, self.managed, f"acc-{ext}")
        self.accessor[c.id] = f"acc-{ext}"
        if byo:
            con = add_connection(self.engine, f"con_b{n}", f"byo-{ext}", kind="byo")
            add_key(self.engine, f"key_b_{ext}", c.id, con, f"acc-b-{ext}")
            self.byo[c.id] = con
            self.byo_accessor[c.id] = f"acc-b-{ext}"
        return c.id

    def usage(
        self,
        customer_id: str,
        created: datetime,
        line_item: str = "streaming::nova-3",
        minutes: str = "10",
        cost: str = "0.0430",
        byo: bool = False,
    ) -> str:
        """One usage record for the customer (on their BYO connection with ``byo``), through the ledger's
        own bulk insert (dedupe, attribution by accessor, rollups)."""
        connection = self.byo[customer_id] if byo else self.managed
        accessor = self.byo_accessor[customer_id] if byo else self.accessor[customer_id]
        rid = f"req-{next(_seq)}"
        method, _, model = line_item.partition("::")
        rec = UsageRecord(
            request_id=rid,
            api_key_id=accessor,
            created=created,
            endpoint="listen",
            method=method,
            model=model,
            line_item=line_item,
            unit="minute",
            quantity=Decimal(minutes),
            cost_usd=Decimal(cost),
        )
        with self.engine.begin() as conn:
            usage_store.insert_records(
                conn,
                connection_id=connection,
                records=[rec],
                keys_by_accessor=usage_store.key_map(conn, connection),
                batch=f"b-{rid}",
                synced_at=self.clock.now(),
            )
        return rid
