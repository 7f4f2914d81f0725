"""SQL for webhook endpoints, events, deliveries and the delivery log. The caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from keyledger.core.ids import new_id
from keyledger.core.leases import dead_local_owner
from keyledger.db.outbox import subscribed
from keyledger.db.tables_notifications import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)

ep = webhook_endpoints.c
dv = webhook_deliveries.c
ev = webhook_events.c
at_ = webhook_attempts.c


def insert_endpoint(db: Connection, values: dict[str, Any]) -> None:
    db.execute(insert(webhook_endpoints).values(**values))


def get_endpoint(db: Connection, endpoint_id: str) -> dict[str, Any] | None:
    row = db.execute(select(webhook_endpoints).where(ep.id == endpoint_id)).mappings().first()
    return dict(row) if row else None


def list_endpoints(db: Connection, *, include_removed: bool = False) -> list[dict[str, Any]]:
    q = select(webhook_endpoints).order_by(ep.created_at, ep.id)
    if not include_removed:
        q = q.where(ep.status != "removed")
    return [dict(r) for r in db.execute(q).mappings()]


def set_endpoint_status(
    db: Connection, endpoint_id: str, status: str, reason: str | None, now: datetime
) -> None:
    db.execute(
        update(webhook_endpoints)
        .where(ep.id == endpoint_id)
        .values(status=status, disabled_reason=reason, updated_at=now)
    )


def cancel_pending(db: Connection, endpoint_id: str, now: datetime, reason: str) -> int:
    return db.execute(
        update(webhook_deliveries)
        .where(dv.endpoint_id == endpoint_id, dv.state == "pending")
        .values(state="cancelled", finished_at=now, last_error=reason, lease_owner=None, lease_until=None)
    ).rowcount


def get_event(db: Connection, event_id: str) -> dict[str, Any] | None:
    row = db.execute(select(webhook_events).where(ev.id == event_id)).mappings().first()
    return dict(row) if row else None


def list_events(db: Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    q = select(webhook_events).order_by(ev.created_at.desc(), ev.id.desc()).limit(limit)
    return [dict(r) for r in db.execute(q).mappings()]


def requeue(db: Connection, event: dict[str, Any], now: datetime) -> int:
    """Queue the event again for every active endpoint subscribed to it (same event id)."""
    n = 0
    for e in list_endpoints(db):
        if e["status"] != "active" or not subscribed(e["events"], event["type"]):
            continue
        where = (dv.event_id == event["id"], dv.endpoint_id == e["id"])
        exists = db.execute(select(dv.state).where(*where)).first()
        values = {
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_until": None,
            "finished_at": None,
        }
        if exists:
            db.execute(update(webhook_deliveries).where(*where).values(**values))
        else:
            db.execute(
                insert(webhook_deliveries).values(
                    event_id=event["id"], endpoint_id=e["id"], created_at=now, **values
                )
            )
        n += 1
    return n


def claim_due(db: Connection, *, now: datetime, owner: str, lease_until: datetime, limit: int) -> list[tuple]:
    """Lease up to ``limit`` due deliveries. PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers
    take disjoint rows; SQLite: writers are serialized (``BEGIN IMMEDIATE``). The conditional UPDATE makes
    the lease safe on both."""
    free = or_(dv.lease_until.is_(None), dv.lease_until <= now)
    held = db.execute(
        select(dv.lease_owner).distinct().where(dv.state == "pending", dv.lease_until > now)
    ).scalars()
    dead = [o for o in held if dead_local_owner(o)]
    if dead:  # a sender on this host that was killed: its leases are free at once
        free = or_(free, dv.lease_owner.in_(dead))
    q = (
        select(dv.event_id, dv.endpoint_id)
        .where(dv.state == "pending", dv.next_attempt_at <= now, free)
        .order_by(dv.next_attempt_at, dv.event_id)
        .limit(limit)
    )
    if db.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    claimed = []
    for r in db.execute(q).all():
        done = db.execute(
            update(webhook_deliveries)
            .where(dv.event_id == r.event_id, dv.endpoint_id == r.endpoint_id, dv.state == "pending", free)
            .values(lease_owner=owner, lease_until=lease_until)
        ).rowcount
        if done:
            claimed.append((r.event_id, r.endpoint_id))
    return claimed


def any_due(db: Connection, now: datetime) -> bool:
    q = select(dv.event_id).where(dv.state == "pending", dv.next_attempt_at <= now).limit(1)
    return db.execute(q).first() is not None


def get_delivery(db: Connection, event_id: str, endpoint_id: str) -> dict[str, Any] | None:
    row = (
        db.execute(select(webhook_deliveries).where(dv.event_id == event_id, dv.endpoint_id == endpoint_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def finish_attempt(
    db: Connection, event_id: str, endpoint_id: str, owner: str, values: dict[str, Any]
) -> bool:
    """Record the outcome, only while the lease is ours (else another worker took over)."""
    return (
        db.execute(
            update(webhook_deliveries)
            .where(dv.event_id == event_id, dv.endpoint_id == endpoint_id, dv.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, **values)
        ).rowcount
        > 0
    )


def log_attempt(db: Connection, values: dict[str, Any]) -> None:
    db.execute(insert(webhook_attempts).values(id=new_id("att"), **values))


def attempts(db: Connection, *, event_id: str | None = None, endpoint_id: str | None = None) -> list[dict]:
    q = select(webhook_attempts).order_by(at_.at, at_.attempt, at_.id)
    if event_id:
        q = q.where(at_.event_id == event_id)
    if endpoint_id:
        q = q.where(at_.endpoint_id == endpoint_id)
    return [dict(r) for r in db.execute(q).mappings()]


def delivery_counts(db: Connection) -> dict[tuple[str, str], int]:
    from sqlalchemy import func

    rows = db.execute(select(dv.endpoint_id, dv.state, func.count()).group_by(dv.endpoint_id, dv.state))
    return {(r[0], r[1]): int(r[2]) for r in rows}
