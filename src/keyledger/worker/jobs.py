"""The worker's jobs, and ``sync_then_budgets`` (what ``keyledger sync`` and the sync job do).

- ``sync:<connection>``: pull usage (``SyncService``), then evaluate every budget (so a breach acts within
  one sync interval), then send due webhooks;
- ``budgets``: evaluate every budget and retry enforcement still ``revoke_pending``;
- ``invoices``: for each customer with a plan whose previous month (in their time zone) closed more than
  the grace period ago and has no issued invoice yet: run (and by default finalize) it;
- ``deliver``: send due webhook deliveries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from keyledger.budgets import model as budget_model
from keyledger.budgets.service import BudgetService, Outcome
from keyledger.core.errors import Invalid, KeyledgerError, NotFound
from keyledger.customers import store as customer_store
from keyledger.notifications import store as notification_store
from keyledger.notifications.service import Deliverer, DeliveryReport
from keyledger.usage import service as usage_service
from keyledger.usage import store as usage_store
from keyledger.worker.scheduler import Job

log = structlog.get_logger(__name__)


def deliverer(rt: Any, **kwargs: Any) -> Deliverer:
    return Deliverer(
        rt.engine,
        rt.cipher,
        rt.clock,
        allow_private=bool(rt.settings.webhook_allow_private_networks),
        **kwargs,
    )


def deliver_due(rt: Any, *, seconds: float | None = None) -> DeliveryReport | None:  # float-ok: seconds
    """Send due webhooks (for at most ``seconds``); None when nothing is due (no secret key needed then)."""
    with rt.engine.connect() as db:
        if not notification_store.any_due(db, rt.clock.now()):
            return None
    if seconds is None:
        return deliverer(rt).deliver_due()
    d = deliverer(rt, timeout_seconds=min(10.0, seconds))
    return d.deliver_due(deadline=time.monotonic() + seconds)


def sync_service(rt: Any, progress: Callable | None = None) -> usage_service.SyncService:
    return usage_service.SyncService(
        engine=rt.engine,
        settings=rt.settings,
        clock=rt.clock,
        open_provider=lambda connection: rt.provider_for(connection.id),
        progress=progress,
    )


@dataclass
class SyncOutcome:
    reports: list[usage_service.RunReport] = field(default_factory=list)
    budgets: list[Outcome] = field(default_factory=list)
    delivery: DeliveryReport | None = None
    error: KeyledgerError | None = None


def sync_then_budgets(
    rt: Any,
    *,
    connection: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable | None = None,
    deliver_seconds: float = 15.0,  # float-ok: seconds
) -> SyncOutcome:
    """Sync, then (after its commits, also when it failed part-way) evaluate budgets and send due webhooks.

    A sync error is returned in ``error`` (the caller raises it) after budgets have been evaluated.
    """
    out = SyncOutcome()
    svc = sync_service(rt, progress)
    try:
        out.reports = svc.sync(connection=connection, since=since, until=until)
    except KeyledgerError as exc:
        out.error = exc
    if not isinstance(out.error, Invalid | NotFound):  # bad input changes nothing
        out.budgets = BudgetService(rt, actor="sync").evaluate_all()
    if deliver_seconds > 0:
        try:
            out.delivery = deliver_due(rt, seconds=deliver_seconds)
        except KeyledgerError as exc:  # e.g. no secret key: deliveries wait for the worker
            log.warning("sync.delivery_skipped", error=str(exc))
    return out


def previous_local_month(now: datetime, tz: str) -> budget_model.Period:
    current = budget_model.period_at(now, tz)
    return budget_model.period_at(current.starts_at - timedelta(seconds=1), tz)


def run_closed_invoices(rt: Any) -> list[str]:
    """Invoices of closed periods (after the grace period) that are not issued yet; returns their ids.

    The customers due are grouped by period (a period is local: customers in different time zones may
    be due for different months), and each period is one batched run of those customers; a customer
    that cannot be invoiced is logged and the others go on."""
    # Imported here: `keyledger sync` imports this module and never invoices (and invoices are heavy).
    from keyledger.invoices import store as invoice_store
    from keyledger.invoices.service import InvoiceService

    now = rt.clock.now()
    grace = timedelta(seconds=int(rt.settings.worker_invoice_grace_seconds))
    svc = InvoiceService.from_settings(rt.engine, rt.clock, rt.settings, actor="worker")
    due: dict[str, list[str]] = {}
    with rt.engine.connect() as db:
        for c in customer_store.list_customers(db):
            if c.plan is None:
                continue
            period = previous_local_month(now, c.timezone)
            if now < period.ends_at + grace or c.created_at >= period.ends_at:
                continue
            due.setdefault(period.key, []).append(c.id)
        for key, ids in due.items():
            live = invoice_store.live_invoices(db, ids, key)
            issued = {cid for cid, inv in live.items() if inv["status"] != "draft"}
            due[key] = [cid for cid in ids if cid not in issued]
    done: list[str] = []
    for key, ids in sorted(due.items()):
        if not ids:
            continue
        try:
            report = svc.run(key, customer_ids=ids, finalize=bool(rt.settings.worker_invoice_finalize))
        except KeyledgerError as exc:
            log.warning("worker.invoice_failed", period=key, customers=len(ids), error=str(exc))
            continue
        for e in report.entries:
            if e.outcome == "failed":
                log.warning("worker.invoice_failed", customer_id=e.customer_id, period=key, error=e.message)
            elif e.invoice_id:
                done.append(e.invoice_id)
    return done


def build_jobs(rt: Any) -> list[Job]:
    s = rt.settings
    with rt.engine.connect() as db:
        connections = [c for c in usage_store.list_connections(db) if c.status == "active"]
    jobs = []
    for c in connections:

        def run_sync(cid: str = c.id) -> None:
            result = sync_then_budgets(rt, connection=cid, deliver_seconds=0)
            if result.error is not None:
                raise result.error

        jobs.append(Job(f"sync:{c.id}", timedelta(seconds=s.worker_sync_interval_seconds), run_sync))
    jobs.append(
        Job(
            "budgets",
            timedelta(seconds=s.worker_budget_interval_seconds),
            lambda: BudgetService(rt, actor="worker").evaluate_all(),
            lease=timedelta(minutes=5),
        )
    )
    jobs.append(
        Job("invoices", timedelta(seconds=s.worker_invoice_interval_seconds), lambda: run_closed_invoices(rt))
    )
    jobs.append(
        Job(
            "deliver",
            timedelta(seconds=s.worker_delivery_interval_seconds),
            lambda: deliver_due(rt),
            lease=timedelta(minutes=5),
        )
    )
    return jobs
