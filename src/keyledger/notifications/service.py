"""Webhook endpoints and delivery.

Delivery (``Deliverer.deliver_due``): lease due deliveries (``claim_due``), then for each — outside any
transaction — build the body from the stored event (the same bytes on every attempt), sign it with the
endpoint's secret and a fresh ``webhook-timestamp``, check the URL against the SSRF guard, POST it without
following redirects, and record the attempt and the new state in one transaction:

- 2xx: delivered;
- 410 Gone: the endpoint is disabled and its pending deliveries cancelled;
- anything else (3xx, 4xx, 5xx, timeout, refused address): retried after :data:`BACKOFF`
  (5 s, 1 min, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 20 h — about three days), then failed.

A worker killed mid-delivery leaves its lease, which runs out (``lease_seconds``); the next worker
sends the same event with the same ``webhook-id`` (receivers dedupe by it): at least once, never under
a new id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine

from keyledger.core.clock import Clock, SystemClock
from keyledger.core.crypto import Cipher, associated_data
from keyledger.core.errors import Invalid, KeyledgerError, NotFound
from keyledger.core.faults import fault_point
from keyledger.core.ids import new_id
from keyledger.core.leases import local_owner
from keyledger.customers import store as customer_store
from keyledger.db.outbox import EVENT_TYPES
from keyledger.notifications import signing, ssrf, store

log = structlog.get_logger(__name__)

BACKOFF = (
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=20),
)
MAX_ATTEMPTS = len(BACKOFF) + 1


def secret_ad(endpoint_id: str) -> bytes:
    return associated_data("webhook_endpoints", endpoint_id, "secret")


def parse_events(text: str | list[str] | None) -> list[str] | None:
    if text is None:
        return None
    items = text if isinstance(text, list) else [t.strip() for t in text.split(",")]
    items = [t for t in items if t]
    if not items:
        raise Invalid("--events: give one or more of " + ", ".join(EVENT_TYPES))
    for t in items:
        if t not in EVENT_TYPES:
            raise Invalid(f"--events: {t!r} is not one of {', '.join(EVENT_TYPES)}")
    return sorted(set(items))


def body_of(event: dict[str, Any]) -> bytes:
    """The request body of an event: the same bytes on every attempt."""
    doc = {"type": event["type"], "timestamp": event["created_at"].isoformat(), "data": event["payload"]}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def public_endpoint(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": row["events"],
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "created_at": row["created_at"].isoformat(),
    }


@dataclass
class WebhookService:
    engine: Engine
    cipher: Cipher
    clock: Clock
    actor: str = "cli"
    # The interfaces pass settings.webhook_allow_private_networks (refused at creation when False); None
    # skips the creation check (library callers). Every delivery checks again, whatever this is.
    allow_private: bool | None = None

    def add(self, url: str, events: str | list[str] | None = None) -> dict[str, Any]:
        url = ssrf.validate_url(url)
        if self.allow_private is not None:
            ssrf.refuse_non_public(url, allow_private=self.allow_private)
        evs = parse_events(events)
        secret = signing.new_secret()
        now = self.clock.now()
        eid = new_id("whe")
        with self.engine.begin() as db:
            store.insert_endpoint(
                db,
                {
                    "id": eid,
                    "url": url,
                    "events": evs,
                    "secret_ciphertext": self.cipher.encrypt(secret, secret_ad(eid)),
                    "status": "active",
                    "disabled_reason": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="webhook.create",
                subject=eid,
                details={"url": url, "events": evs},
            )
        return {
            "id": eid,
            "url": url,
            "events": evs if evs is not None else list(EVENT_TYPES),
            "secret": secret,
        }

    def list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            counts = store.delivery_counts(db)
            out = []
            for row in store.list_endpoints(db):
                item = public_endpoint(row)
                item["events"] = row["events"] if row["events"] is not None else list(EVENT_TYPES)
                item["deliveries"] = {
                    s: counts.get((row["id"], s), 0) for s in ("pending", "delivered", "failed", "cancelled")
                }
                out.append(item)
        return out

    def remove(self, endpoint_id: str) -> None:
        now = self.clock.now()
        with self.engine.begin() as db:
            row = store.get_endpoint(db, endpoint_id)
            if row is None or row["status"] == "removed":
                raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
            store.set_endpoint_status(db, endpoint_id, "removed", "removed by operator", now)
            store.cancel_pending(db, endpoint_id, now, "endpoint removed")
            customer_store.write_audit(
                db, at=now, actor=self.actor, action="webhook.remove", subject=endpoint_id
            )

    def replay(self, event_id: str) -> int:
        now = self.clock.now()
        with self.engine.begin() as db:
            event = store.get_event(db, event_id)
            if event is None:
                raise NotFound(f"webhook event {event_id!r} not found")
            n = store.requeue(db, event, now)
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="webhook.replay",
                subject=event_id,
                details={"endpoints": n},
            )
        return n

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            return [
                {
                    "id": e["id"],
                    "type": e["type"],
                    "created_at": e["created_at"].isoformat(),
                    "data": e["payload"],
                }
                for e in store.list_events(db, limit=limit)
            ]

    def attempts(self, event_id: str | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            return [
                {
                    "event_id": a["event_id"],
                    "endpoint_id": a["endpoint_id"],
                    "attempt": a["attempt"],
                    "at": a["at"].isoformat(),
                    "status_code": a["status_code"],
                    "error": a["error"],
                    "duration_ms": a["duration_ms"],
                }
                for a in store.attempts(db, event_id=event_id)
            ]


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled_endpoints: list[str] = field(default_factory=list)


@dataclass
class Deliverer:
    """Sends due deliveries. ``clock`` schedules (tests drive it); ``wall_clock`` stamps
    ``webhook-timestamp`` (receivers compare it with their own clock)."""

    engine: Engine
    cipher: Cipher
    clock: Clock
    allow_private: bool = False
    wall_clock: Clock = field(default_factory=SystemClock)
    timeout_seconds: float = 10.0  # float-ok: seconds
    lease_seconds: int = 300  # > batch × timeout, so a live sender never loses its lease
    batch: int = 10
    transport: httpx.BaseTransport | None = None
    owner: str = field(default_factory=lambda: local_owner(new_id("dlv")))

    def deliver_due(
        self, *, max_batches: int = 100, deadline: float | None = None  # float-ok: monotonic seconds
    ) -> DeliveryReport:
        report = DeliveryReport()
        with httpx.Client(
            follow_redirects=False, timeout=self.timeout_seconds, transport=self.transport
        ) as http:
            for _ in range(max_batches):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                now = self.clock.now()
                with self.engine.begin() as db:
                    claimed = store.claim_due(
                        db,
                        now=now,
                        owner=self.owner,
                        limit=self.batch,
                        lease_until=now + timedelta(seconds=self.lease_seconds),
                    )
                if not claimed:
                    break
                for event_id, endpoint_id in claimed:
                    self._one(http, event_id, endpoint_id, report)
        return report

    def _one(self, http: httpx.Client, event_id: str, endpoint_id: str, report: DeliveryReport) -> None:
        with self.engine.connect() as db:
            event = store.get_event(db, event_id)
            endpoint = store.get_endpoint(db, endpoint_id)
            delivery = store.get_delivery(db, event_id, endpoint_id)
        now = self.clock.now()
        if event is None or endpoint is None or endpoint["status"] != "active" or delivery is None:
            with self.engine.begin() as db:
                store.finish_attempt(
                    db,
                    event_id,
                    endpoint_id,
                    self.owner,
                    {"state": "cancelled", "finished_at": now, "last_error": "endpoint not active"},
                )
            return
        attempt = int(delivery["attempts"]) + 1
        body = body_of(event)
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            ssrf.check(endpoint["url"], allow_private=self.allow_private)
            secret = self.cipher.decrypt(endpoint["secret_ciphertext"], secret_ad(endpoint_id))
            ts = int(self.wall_clock.now().timestamp())
            resp = http.post(
                endpoint["url"], content=body, headers=signing.headers(secret, event_id, ts, body)
            )
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except ssrf.Refused as exc:
            error = f"refused: {exc}"
        except KeyledgerError as exc:  # e.g. the secret does not decrypt: logged, retried, never fatal
            error = str(exc)[:300]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        fault_point("webhooks.after_send")
        elapsed_ms = int((time.monotonic() - started) * 1000)
        now = self.clock.now()
        report.attempted += 1
        values: dict[str, Any] = {"attempts": attempt, "last_status": status, "last_error": error}
        gone = status == 410
        if error is None:
            values.update(state="delivered", finished_at=now)
            report.delivered += 1
        elif gone or attempt >= MAX_ATTEMPTS:
            values.update(state="failed", finished_at=now)
            report.failed += 1
        else:
            values.update(next_attempt_at=now + BACKOFF[attempt - 1])
            report.retrying += 1
        with self.engine.begin() as db:
            store.log_attempt(
                db,
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint_id,
                    "attempt": attempt,
                    "at": now,
                    "status_code": status,
                    "error": error,
                    "duration_ms": elapsed_ms,
                },
            )
            store.finish_attempt(db, event_id, endpoint_id, self.owner, values)
            if gone:
                store.set_endpoint_status(db, endpoint_id, "disabled", "receiver answered 410 Gone", now)
                store.cancel_pending(db, endpoint_id, now, "endpoint disabled (410 Gone)")
                report.disabled_endpoints.append(endpoint_id)
        if error:
            log.info(
                "webhook.attempt_failed",
                event_id=event_id,
                endpoint_id=endpoint_id,
                attempt=attempt,
                error=error,
            )
