"""Tables for outbound webhooks (owned by ``keyledger.notifications``; the outbox writer is the low-level
:mod:`keyledger.db.outbox` so every feature can announce a change in the transaction that makes it).

- ``webhook_events``: the durable outbox; one row per event, its id is the ``webhook-id`` on every attempt.
- ``webhook_endpoints``: receivers, each with its own ``whsec_`` secret (encrypted at rest) and event filter.
- ``webhook_deliveries``: one row per (event, endpoint): state, attempts, next attempt, a row lease.
- ``webhook_attempts``: the delivery log, one row per HTTP attempt.
- ``worker_jobs``: the worker's schedule and job leases.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, String, Table, Text

from keyledger.db.metadata import UTCDateTime, metadata

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(40), primary_key=True),  # msg_…: the webhook-id
    Column("type", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_webhook_events_created", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),  # whe_…
    Column("url", String(2000), nullable=False),
    Column("events", JSON),  # list of event types; NULL = every event
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled | removed
    Column("disabled_reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("endpoint_id", String(40), primary_key=True),
    Column("state", String(16), nullable=False),  # pending | delivered | failed | cancelled
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(80)),
    Column("lease_until", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_event", "event_id", "endpoint_id"),
)

# Scheduling of the worker's jobs (owned by ``keyledger.worker``): one row per job, claimed with a
# conditional UPDATE (a lease), so several workers never run the same job at the same time.
worker_jobs = Table(
    "worker_jobs",
    metadata,
    Column("name", String(120), primary_key=True),  # e.g. sync:con_…, budgets, invoices, deliver
    Column("next_run_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(80)),
    Column("lease_until", UTCDateTime),
    Column("last_started_at", UTCDateTime),
    Column("last_finished_at", UTCDateTime),
    Column("last_error", Text),
)
