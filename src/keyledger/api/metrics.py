"""Prometheus metrics at ``GET /metrics`` (docs/operations.md, "Monitoring").

Two kinds of figures:

- **Database gauges**, computed at scrape time by :class:`DatabaseCollector` from the shared database, so
  every API process answers the same numbers whichever one a scrape reaches, and the worker's progress
  (sync watermarks, deliveries, budget enforcement, invoices) is visible without scraping the worker.
- **Process counters** of this process's HTTP traffic (route *template*, method, status: never an id).

Labels carry connection ids and names, job names, states and event types, never a customer or tenant
value. The endpoint wants ``Authorization: Bearer`` with ``KEYLEDGER_METRICS_TOKEN`` or an admin token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.routing import Mount

from keyledger.api.problems import problem
from keyledger.customers.tokens import TokenService
from keyledger.db.tables_budgets import budget_periods
from keyledger.db.tables_customers import connections
from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_notifications import webhook_deliveries, webhook_events, worker_jobs
from keyledger.db.tables_usage import sync_runs, sync_state, usage_records

BUDGET_ALERT_EVENTS = ("budget.threshold_reached", "budget.projected_to_exceed")


def _ts(value: Any) -> float:  # float-ok: seconds for Prometheus, never money
    return value.timestamp()


class DatabaseCollector(Collector):
    """The ledger, sync, delivery, budget and invoice gauges, read from the database at each scrape."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("keyledger_database_up", "1 when the scrape could read the database")
        try:
            families = list(self._families())
        except Exception:  # the scrape itself must still answer: database_up 0 is the alert
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        now = self.runtime.clock.now()
        with self.runtime.engine.connect() as db:
            names = dict(db.execute(select(connections.c.id, connections.c.name)).all())

            def conn_labels(cid: str) -> list[str]:
                return [cid, names.get(cid, "")]

            lag = GaugeMetricFamily("keyledger_sync_lag_seconds",
                                    "Seconds between now and the connection's sync watermark (everything "
                                    "created before the watermark is in the ledger)",
                                    labels=["connection_id", "connection"])
            for cid, watermark in db.execute(select(sync_state.c.connection_id, sync_state.c.watermark)):
                if watermark is not None:
                    lag.add_metric(conn_labels(cid), max(0.0, (now - watermark).total_seconds()))
            yield lag

            last_ok = GaugeMetricFamily("keyledger_sync_last_success_timestamp_seconds",
                                        "When the connection's last successful sync run finished (Unix time)",
                                        labels=["connection_id", "connection"])
            r = sync_runs.c
            for cid, at in db.execute(select(r.connection_id, func.max(r.finished_at))
                                      .where(r.status == "succeeded").group_by(r.connection_id)):
                if at is not None:
                    last_ok.add_metric(conn_labels(cid), _ts(at))
            yield last_ok

            u = usage_records.c
            ingested = CounterMetricFamily("keyledger_usage_records_ingested",
                                           "Usage records in the ledger (one per Deepgram request)",
                                           labels=["connection_id", "connection"])
            unattributed = GaugeMetricFamily("keyledger_usage_records_unattributed",
                                             "Ledger records whose API key belongs to no customer",
                                             labels=["connection_id", "connection"])
            rows = db.execute(select(u.connection_id, func.count(), func.count(u.customer_id))
                              .group_by(u.connection_id)).all()
            for cid, total, attributed in rows:
                ingested.add_metric(conn_labels(cid), total)
                unattributed.add_metric(conn_labels(cid), total - attributed)
            yield ingested
            yield unattributed

            d = webhook_deliveries.c
            by_state = GaugeMetricFamily("keyledger_webhook_deliveries",
                                         "Webhook deliveries by state (failed = gave up: dead letters)",
                                         labels=["state"])
            for state, n in db.execute(select(d.state, func.count()).group_by(d.state)):
                by_state.add_metric([state], n)
            yield by_state
            due, oldest = db.execute(
                select(func.count().filter(d.next_attempt_at <= now), func.min(d.created_at))
                .where(d.state == "pending")
            ).one()
            yield GaugeMetricFamily("keyledger_webhook_deliveries_due",
                                    "Pending deliveries whose next attempt is due now (the backlog)",
                                    value=due)
            yield GaugeMetricFamily("keyledger_webhook_oldest_pending_age_seconds",
                                    "Age of the oldest pending delivery (0 when none is pending)",
                                    value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

            e = webhook_events.c
            alerts = CounterMetricFamily("keyledger_budget_alerts",
                                         "Budget alert events written (each is delivered to every endpoint)",
                                         labels=["type"])
            counts = dict(db.execute(select(e.type, func.count()).where(e.type.in_(BUDGET_ALERT_EVENTS))
                                     .group_by(e.type)).all())
            for kind in BUDGET_ALERT_EVENTS:
                alerts.add_metric([kind], counts.get(kind, 0))
            yield alerts

            b = budget_periods.c
            periods = GaugeMetricFamily("keyledger_budget_periods",
                                        "Budget periods by state (revoke_pending: keys still to delete; "
                                        "revoked: enforcement done)", labels=["state"])
            for state, n in db.execute(select(b.state, func.count()).group_by(b.state)):
                periods.add_metric([state], n)
            yield periods

            i = invoices.c
            inv = GaugeMetricFamily("keyledger_invoices", "Invoices by status", labels=["status"])
            for status, n in db.execute(select(i.status, func.count()).group_by(i.status)):
                inv.add_metric([status], n)
            yield inv

            j = worker_jobs.c
            jobs = GaugeMetricFamily("keyledger_worker_job_last_finished_timestamp_seconds",
                                     "When each worker job last finished (Unix time)", labels=["job"])
            overdue = GaugeMetricFamily("keyledger_worker_job_overdue_seconds",
                                        "How late each worker job is (0 when not yet due)", labels=["job"])
            for name, finished, next_run in db.execute(select(j.name, j.last_finished_at, j.next_run_at)):
                if finished is not None:
                    jobs.add_metric([name], _ts(finished))
                overdue.add_metric([name], max(0.0, (now - next_run).total_seconds()))
            yield jobs
            yield overdue


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's template with its router prefixes (``/api/v1/customers/{customer_id}``), so a
    label never holds an id. FastAPI keeps included routers nested, so the matched route knows only its own
    tail: the prefix is the request path minus as many segments as the template has."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return "unmatched"
    if isinstance(route, Mount) or ":path}" in template:
        return template
    parts = scope.get("path", "").split("/")
    head = parts[: max(1, len(parts) - template.count("/"))]
    return "/".join(head).rstrip("/") + template


class HttpMetrics:
    """This process's HTTP requests: a counter and a latency histogram by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("keyledger_http_requests", "HTTP requests answered by this process",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("keyledger_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=registry)

    def observe(self, request: Request, status: int, seconds: float) -> None:  # float-ok: seconds
        template = route_template(request.scope)
        self.requests.labels(request.method, template, str(status)).inc()
        self.latency.labels(request.method, template).observe(seconds)


def _authorized(request: Request, runtime: Any) -> int:
    """0 if the caller may scrape, else the HTTP status to answer (401 or 403)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return 401
    configured = runtime.settings.metrics_token
    if configured is not None and configured.get_secret_value() and hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        return 0
    found = TokenService(runtime).authenticate(token)
    if found is None:
        return 401
    return 0 if found.is_admin else 403


def install(app: FastAPI, runtime: Any) -> HttpMetrics:
    """Mount ``GET /metrics`` on ``app`` and return the HTTP metrics the request middleware feeds."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(runtime))
    ProcessCollector(registry=registry)
    http = HttpMetrics(registry)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        denied = _authorized(request, runtime)
        if denied == 401:
            return problem(401, "send 'Authorization: Bearer <KEYLEDGER_METRICS_TOKEN or an admin token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="keyledger-metrics"'})
        if denied == 403:
            return problem(403, "metrics need the metrics token or an admin token; a portal token cannot "
                                "read them")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return http
