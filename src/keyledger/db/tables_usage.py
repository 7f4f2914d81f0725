"""Tables for the usage ledger: one row per Deepgram request, daily rollups, sync state and runs.

Quantities and costs are :class:`keyledger.db.metadata.ExactAmount` (exact on SQLite and PostgreSQL).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from keyledger.db.metadata import Money, Quantity, UTCDateTime, metadata

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("connection_id", String(40), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("api_key_id", String(100), nullable=False),
    Column("customer_id", String(40)),  # NULL: unattributed (a key that belongs to no customer)
    Column("key_id", String(40)),
    Column("created", UTCDateTime, nullable=False),
    Column("day", Date, nullable=False),  # UTC date of `created`
    Column("endpoint", String(16), nullable=False),  # listen | speak | read | agent
    Column("method", String(16), nullable=False),  # sync | async | streaming
    Column("model", String(100), nullable=False),
    Column("line_item", String(120), nullable=False),  # e.g. streaming::nova-3
    Column("unit", String(16), nullable=False),  # minute | character | token
    Column("quantity", Quantity, nullable=False),
    Column("cost_usd", Money, nullable=False),  # Deepgram's per-request `usd`, exact
    Column("code", Integer),
    Column("tags", JSON),
    Column("synced_at", UTCDateTime, nullable=False),
    # The sync batch (run and chunk) that inserted the row: daily rollups add exactly a batch's rows.
    Column("batch", String(48)),
    UniqueConstraint("connection_id", "request_id"),
    # Per customer and day: invoices claim records by customer (invoices/store.py).
    Index("ix_usage_records_customer_day", "customer_id", "day"),
    Index("ix_usage_records_conn_created", "connection_id", "created"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("connection_id", String(40), primary_key=True),
    Column("api_key_id", String(100), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("line_item", String(120), primary_key=True),
    Column("customer_id", String(40)),
    Column("unit", String(16), nullable=False),
    Column("quantity", Quantity, nullable=False),
    Column("cost_usd", Money, nullable=False),
    Column("requests", Integer, nullable=False),
    Index("ix_usage_daily_customer_day", "customer_id", "day"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("connection_id", String(40), primary_key=True),
    # Everything created before the watermark has been committed to the ledger.
    Column("watermark", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("connection_id", String(40), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # running | succeeded | failed
    Column("window_start", UTCDateTime),
    Column("window_end", UTCDateTime),
    Column("fetched", Integer, nullable=False, server_default="0"),
    Column("inserted", Integer, nullable=False, server_default="0"),
    Column("duplicates", Integer, nullable=False, server_default="0"),
    Column("unattributed", Integer, nullable=False, server_default="0"),
    Column("api_calls", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Index("ix_sync_runs_conn_started", "connection_id", "started_at"),
)
