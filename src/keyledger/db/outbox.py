"""The outbox writer: announce a change in the SAME transaction that makes it.

``enqueue(db, event_type, payload, at)`` inserts one ``webhook_events`` row and one pending
``webhook_deliveries`` row per active endpoint subscribed to the type. If the transaction rolls back, the
event never existed; if it commits, the event is durable and the worker delivers it (``keyledger.
notifications`` owns endpoints, signing and delivery). It lives in ``db`` so that every feature (customers,
usage, invoices, budgets) can call it without importing a higher layer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from keyledger.core.faults import fault_point
from keyledger.core.ids import new_id
from keyledger.db.tables_notifications import webhook_deliveries, webhook_endpoints, webhook_events

EVENT_TYPES = (
    "invoice.finalized",
    "budget.threshold_reached",
    "budget.projected_to_exceed",
    "customer.suspended",
    "customer.reinstated",
    "key.created",
    "key.revoked",
    "sync.failed",
)


def subscribed(events: list[str] | None, event_type: str) -> bool:
    return events is None or event_type in events


def enqueue(db: Connection, event_type: str, payload: dict[str, Any], at: datetime) -> str:
    """Write an event (and its deliveries) inside the caller's transaction; returns the event id."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = new_id("msg")
    db.execute(insert(webhook_events).values(id=event_id, type=event_type, payload=payload, created_at=at))
    ep = webhook_endpoints.c
    rows = db.execute(select(ep.id, ep.events).where(ep.status == "active")).all()
    targets = [r.id for r in rows if subscribed(r.events, event_type)]
    if targets:
        db.execute(
            insert(webhook_deliveries),
            [
                {
                    "event_id": event_id,
                    "endpoint_id": t,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": at,
                    "created_at": at,
                }
                for t in targets
            ],
        )
    fault_point(f"outbox.enqueue.{event_type}")  # inside the caller's transaction, before its commit
    return event_id
