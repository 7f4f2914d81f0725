"""Use cases of the usage ledger: sync, usage queries, reconciliation.

Sync, per connection (see ``model`` for the windows):

1. take the connection's lease in ``sync_state`` (a conditional UPDATE; a lease whose owner process is
   dead on this host, or whose time ran out, is taken over; otherwise wait, then skip cleanly);
2. read each window's pages (newest first, limit 1000) and commit them in chunks: ``INSERT … ON CONFLICT
   DO NOTHING`` by request_id plus the daily rollup of exactly the inserted rows, in one transaction;
3. the window's last chunk and the watermark advance commit together, and only while the lease is held;
4. a failure (Deepgram down after retries, a refused key) records a failed run and leaves the watermark
   where it was; a crash anywhere leaves at most committed chunks, which the next run dedupes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal

import structlog
from sqlalchemy import Engine

from keyledger.core.clock import Clock
from keyledger.core.config import Settings
from keyledger.core.errors import (
    Conflict,
    Invalid,
    KeyledgerError,
    NotFound,
    ProviderAuthError,
    ProviderError,
)
from keyledger.core.faults import fault_point
from keyledger.core.ids import new_id
from keyledger.core.leases import dead_local_owner, local_owner
from keyledger.core.money import round_money
from keyledger.db.outbox import enqueue
from keyledger.provider.port import Provider, UsageRecord
from keyledger.usage import model, price_check_service, store
from keyledger.usage.price_check import PriceCheckConfig
from keyledger.usage.price_check import brief as brief_price_check
from keyledger.usage.store import ConnectionRow

log = structlog.get_logger(__name__)

OpenProvider = Callable[[ConnectionRow], Provider]
Progress = Callable[[str, int, int, int], None]  # connection name, fetched so far, window index, windows


@dataclass
class RunReport:
    connection: str
    connection_id: str
    run_id: str | None = None
    status: str = "succeeded"  # succeeded | failed | skipped
    fetched: int = 0
    inserted: int = 0
    duplicates: int = 0
    unattributed: int = 0
    api_calls: int = 0
    windows: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    error: str | None = None

    def counters(self) -> dict[str, int]:
        """The counts a sync run records (``sync_runs``), as keyword arguments of the store."""
        return {
            "fetched": self.fetched,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "unattributed": self.unattributed,
            "api_calls": self.api_calls,
        }

    def as_json(self) -> dict:
        return {
            "connection": self.connection,
            "fetched": self.fetched,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "unattributed": self.unattributed,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "status": self.status,
            "api_calls": self.api_calls,
            "windows": self.windows,
            "run_id": self.run_id,
            "error": self.error,
        }


def _calls(provider: Provider) -> int:
    return int(getattr(getattr(provider, "http", None), "calls", 0))


@dataclass
class SyncService:
    engine: Engine
    settings: Settings
    clock: Clock
    open_provider: OpenProvider
    progress: Progress | None = None
    lease_wait_seconds: float = 120.0  # float-ok: seconds

    # ------------------------------------------------------------------ entry point

    def sync(
        self,
        *,
        connection: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RunReport]:
        if since is not None and until is not None and since >= until:
            raise Invalid("--since must be before --until")
        with self.engine.connect() as conn:
            if connection is not None:
                targets = [store.connection_named(conn, connection)]
            else:
                targets = [c for c in store.list_connections(conn) if c.status == "active"]
        reports = []
        for target in targets:
            reports.append(self._sync_connection(target, since=since, until=until))
        failed = [r for r in reports if r.status == "failed"]
        if failed:
            first = failed[0]
            raise ProviderError(f"sync of connection {first.connection!r} failed: {first.error}")
        return reports

    # ------------------------------------------------------------------ one connection

    def _lease(self, c: ConnectionRow, owner: str) -> bool:
        deadline = time.monotonic() + self.lease_wait_seconds
        while True:
            now = self.clock.now()
            expires = now + timedelta(seconds=self.settings.sync_lease_seconds)
            with self.engine.begin() as conn:
                store.ensure_state(conn, c.id, now)
                state = store.read_state(conn, c.id)
                holder = state["lease_owner"] if state else None
                steal = holder if dead_local_owner(holder) else None
                if store.try_lease(conn, c.id, owner, now, expires, steal_from=steal):
                    if steal:
                        log.warning("sync.lease_taken_over", connection=c.name, dead_owner=steal)
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _renew(self, conn, c: ConnectionRow, owner: str) -> None:
        now = self.clock.now()
        if not store.renew_lease(
            conn, c.id, owner, now, now + timedelta(seconds=self.settings.sync_lease_seconds)
        ):
            raise Conflict(f"connection {c.name!r}: another sync took over the lease; stopping")

    def _sync_connection(
        self, c: ConnectionRow, *, since: datetime | None, until: datetime | None
    ) -> RunReport:
        report = RunReport(connection=c.name, connection_id=c.id)
        run_id = new_id("run")
        owner = local_owner(run_id)
        if not self._lease(c, owner):
            report.status = "skipped"
            report.error = "another sync of this connection is running"
            return report
        fault_point("sync.after_lease")
        report.run_id = run_id
        provider: Provider | None = None
        try:
            with self.engine.begin() as conn:
                state = store.read_state(conn, c.id)
                watermark = state["watermark"] if state else None
                interval = model.sync_interval(
                    now=self.clock.now(),
                    watermark=watermark,
                    settle_seconds=self.settings.sync_settle_seconds,
                    lookback_seconds=self.settings.sync_lookback_seconds,
                    since=since,
                    until=until,
                )
                if interval is not None:
                    report.window_start, report.window_end = interval.start, interval.end
                store.start_run(
                    conn,
                    run_id=run_id,
                    connection_id=c.id,
                    now=self.clock.now(),
                    window_start=report.window_start,
                    window_end=report.window_end,
                )
            if interval is not None:
                provider = self.open_provider(c)
                incremental = since is None and until is None and watermark is not None
                self._pull(c, provider, owner, run_id, interval, watermark, report, incremental)
            with self.engine.begin() as conn:
                store.reattribute(conn, c.id)
                fault_point("sync.before_finish")
                store.finish_run(
                    conn,
                    run_id,
                    status="succeeded",
                    now=self.clock.now(),
                    **report.counters(),
                )
                store.release_lease(conn, c.id, owner, self.clock.now())
        except KeyledgerError as exc:
            report.status = "failed"
            report.error = str(exc)
            if provider is not None:
                report.api_calls = _calls(provider)
            log.info("sync.failed", connection=c.name, error=report.error)
            with self.engine.begin() as conn:
                store.finish_run(
                    conn,
                    run_id,
                    status="failed",
                    now=self.clock.now(),
                    **report.counters(),
                    error=report.error,
                )
                store.release_lease(conn, c.id, owner, self.clock.now())
                enqueue(conn, "sync.failed", {
                    "connection_id": c.id, "connection": c.name, "run_id": run_id, "error": report.error,
                    "window_start": report.window_start.isoformat() if report.window_start else None,
                    "window_end": report.window_end.isoformat() if report.window_end else None,
                }, self.clock.now())
        except BaseException:
            # Not a domain error (a bug, a lost database, Ctrl-C): free the lease for the next run.
            try:
                with self.engine.begin() as conn:
                    store.release_lease(conn, c.id, owner, self.clock.now())
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        finally:
            if provider is not None:
                provider.close()
        return report

    def _pull(
        self,
        c: ConnectionRow,
        provider: Provider,
        owner: str,
        run_id: str,
        interval: model.Window,
        watermark: datetime | None,
        report: RunReport,
        incremental: bool = False,
    ) -> None:
        try:
            names = list(provider.line_item_labels(start=interval.start.date(), end=interval.end.date()))
        except ProviderAuthError as exc:
            # A key without billing:read (a BYO key has usage scopes only): map models onto the line
            # items the ledger already knows rather than stop the sync. Other failures fail the run.
            with self.engine.connect() as conn:
                names = store.known_line_items(conn)
            log.info("sync.line_items_unavailable", connection=c.name, error=str(exc), known=len(names))
        provider.use_line_items(names)
        windows = self._plan(c, provider, interval, watermark if incremental else None)
        report.windows = len(windows)
        limit = self.settings.sync_page_limit
        chunk_no = 0
        for index, (window, failed_only) in enumerate(windows):
            buffer: list[UsageRecord] = []
            pages = (
                provider.iter_failed_requests(start=window.start, end=window.end, limit=limit)
                if failed_only
                else provider.iter_requests(start=window.start, end=window.end, limit=limit)
            )
            for page in pages:
                buffer.extend(page.records)
                report.fetched += len(page.records)
                report.api_calls = _calls(provider)
                fault_point("sync.after_page_fetch")
                if self.progress:
                    self.progress(c.name, report.fetched, index, len(windows))
                if len(buffer) >= self.settings.sync_chunk_pages * limit and page.returned >= limit:
                    chunk_no += 1
                    with self.engine.begin() as conn:
                        self._renew(conn, c, owner)
                        self._commit(conn, c, buffer, f"{run_id}.{chunk_no}", report)
                    fault_point("sync.after_chunk_commit")
                    buffer = []
            chunk_no += 1
            new_mark = model.next_watermark(watermark, window)
            with self.engine.begin() as conn:
                self._renew(conn, c, owner)
                self._commit(conn, c, buffer, f"{run_id}.{chunk_no}", report)
                if new_mark != watermark and new_mark is not None:
                    store.set_watermark(conn, c.id, owner, new_mark, self.clock.now())
                store.update_run_progress(
                    conn,
                    run_id,
                    **report.counters(),
                )
                fault_point("sync.before_commit")
            watermark = new_mark
            fault_point("sync.after_commit")
        report.api_calls = _calls(provider)

    def _plan(
        self, c: ConnectionRow, provider: Provider, interval: model.Window, watermark: datetime | None
    ) -> list[tuple[model.Window, bool]]:
        """The windows to read, oldest first, each with "failed requests only".

        An incremental run (``watermark`` given) asks Deepgram's usage breakdown for the succeeded requests
        of each whole UTC day of the look-back before the watermark's day and compares them with the
        ledger's succeeded records of that day: records are never deleted and request ids are unique, so
        equal counts mean the ledger already holds every succeeded request of the day, and only days whose
        counts differ are re-read (whole days). Failed requests are not counted by the breakdown: they are
        re-read for the look-back with ``status=failed`` (few). From the watermark's day on, everything is
        read as before. If the breakdown is unavailable (403 for a key without usage access, an odd answer,
        any failure), the whole look-back is re-read."""
        full = [(w, False) for w in model.split_windows(interval, self.settings.sync_window_days)]
        if watermark is None:
            return full
        first_day = interval.start.astimezone(UTC).date()
        mark_day = min(watermark, interval.end).astimezone(UTC).date()
        mark_start = datetime.combine(mark_day, dtime.min, tzinfo=UTC)
        if first_day >= mark_day or not interval.start < mark_start < interval.end:
            return full
        last_day = mark_day - timedelta(days=1)
        counts = getattr(provider, "daily_request_counts", None)
        if counts is None or getattr(provider, "iter_failed_requests", None) is None:
            return full
        try:
            provider_counts = counts(start=first_day, end=last_day)
        except Exception as exc:  # noqa: BLE001 - any failure: re-read the whole look-back, lose nothing
            log.info("sync.day_counts_unavailable", connection=c.name, error=str(exc))
            return full
        with self.engine.connect() as conn:
            ledger_counts = store.daily_succeeded_counts(conn, c.id, first_day, last_day)
        plan: list[tuple[model.Window, bool]] = []
        day = first_day
        while day <= last_day:
            if provider_counts.get(day, 0) != ledger_counts.get(day, 0):
                lo = datetime.combine(day, dtime.min, tzinfo=UTC)
                plan.append((model.Window(lo, lo + timedelta(days=1)), False))
            day += timedelta(days=1)
        plan.append((model.Window(interval.start, mark_start), True))
        rest = model.Window(mark_start, interval.end)
        plan.extend((w, False) for w in model.split_windows(rest, self.settings.sync_window_days))
        return plan

    def _commit(
        self, conn, c: ConnectionRow, records: list[UsageRecord], batch: str, report: RunReport
    ) -> None:
        if not records:
            return
        owners = store.key_map(conn, c.id)
        if c.kind == "byo" and c.customer_id:
            # A customer's own Deepgram project: every request in it is theirs, whichever of their keys
            # made it (they create keys keyledger never sees), so nothing there is unattributed.
            owners = _AllBelongTo(owners, c.customer_id)
        result = store.insert_records(
            conn,
            connection_id=c.id,
            records=records,
            keys_by_accessor=owners,
            batch=batch,
            synced_at=self.clock.now(),
        )
        report.inserted += result.inserted
        report.unattributed += result.unattributed
        report.duplicates = report.fetched - report.inserted


class _AllBelongTo(dict):
    """``api_key_id → (key id, customer id)`` where an unknown accessor still belongs to ``customer_id``."""

    def __init__(self, known: dict[str, tuple[str, str]], customer_id: str) -> None:
        super().__init__(known)
        self._fallback = (None, customer_id)

    def get(self, api_key_id, default=None):
        return super().get(api_key_id) or self._fallback


# --------------------------------------------------------------------------- usage queries

BY_CHOICES = ("line-item", "day", "key")


def usage_report(engine: Engine, *, customer: str, start: date, end: date, by: str) -> dict:
    if by not in BY_CHOICES:
        raise Invalid(f"--by: {by!r} is not one of {', '.join(BY_CHOICES)}")
    if start > end:
        raise Invalid("--from must not be after --to")
    with engine.connect() as conn:
        customer_id = store.find_customer_id(conn, customer)
        if customer_id is None:
            raise NotFound(f"no customer {customer!r}")
        rows = store.usage_lines(conn, customer_id=customer_id, start=start, end=end, by=by)
    lines = []
    total = Decimal(0)
    requests = 0
    for r in rows:
        line = {
            "line_item": r["line_item"],
            "unit": r["unit"],
            "quantity": r["quantity"],
            "cost_usd": r["cost_usd"],
            "requests": int(r["requests"]),
        }
        if by == "day":
            line["day"] = r["day"].isoformat()
        elif by == "key":
            line["api_key_id"] = r["api_key_id"]
        total += r["cost_usd"]
        requests += int(r["requests"])
        lines.append(line)
    return {
        "customer_id": customer_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "by": by,
        "cost_usd": total,
        "requests": requests,
        "lines": lines,
    }


# --------------------------------------------------------------------------- reconciliation


def reconcile(
    engine: Engine,
    *,
    open_provider: OpenProvider,
    period: str,
    connection: str | None,
    price_check: PriceCheckConfig | None = None,
) -> dict:
    """Ledger vs Deepgram's billing breakdown; with ``price_check``, also each record's usd vs the list."""
    first, last = model.parse_period(period)
    with engine.connect() as conn:
        if connection is not None:
            found = store.connection_named(conn, connection)
            if found.kind == "byo":
                raise Invalid(
                    f"connection {found.name!r} is a customer's own Deepgram account (BYO): its usage is "
                    "not on your Deepgram bill, so there is nothing to reconcile; name a managed connection"
                )
            targets = [found]
        else:
            # The operator's bill covers managed connections only; BYO usage is the customer's own.
            targets = [c for c in store.list_connections(conn) if c.kind != "byo"]
            if not targets:
                raise NotFound("no connections: add one with `keyledger connections add`")
        ledger = store.ledger_by_key(conn, connection_ids=[t.id for t in targets], start=first, end=last)
        owners = {(t.id, a): cust for t in targets for a, (_k, cust) in store.key_map(conn, t.id).items()}
        checked = (
            None
            if price_check is None
            else price_check_service.check_connections(
                conn, price_check, connection_ids=[t.id for t in targets], period=period
            )
        )
    provider_by_key: dict[tuple[str, str | None], Decimal] = {}
    for t in targets:
        provider = open_provider(t)
        try:
            for row in provider.billing_breakdown(start=first, end=last):
                k = (t.id, row.accessor)
                provider_by_key[k] = provider_by_key.get(k, Decimal(0)) + row.dollars
        finally:
            provider.close()
    ledger_by_key = {(r["connection_id"], r["api_key_id"]): r for r in ledger}
    zero = Decimal(0)
    attributed = unattributed = zero
    customers: dict[str, dict[str, Decimal]] = {}
    key_lines = []
    for k in sorted(set(ledger_by_key) | set(provider_by_key), key=lambda x: (x[0], x[1] or "")):
        row = ledger_by_key.get(k)
        ledger_usd = row["cost_usd"] if row else zero
        customer_id = (row["customer_id"] if row else None) or owners.get(k)
        provider_usd = provider_by_key.get(k, zero)
        if customer_id is None:
            unattributed += ledger_usd
        else:
            attributed += ledger_usd
            cell = customers.setdefault(customer_id, {"attributed_usd": zero, "provider_usd": zero})
            cell["attributed_usd"] += ledger_usd
            cell["provider_usd"] += provider_usd
        key_lines.append(
            {
                "api_key_id": k[1],
                "customer_id": customer_id,
                "ledger_usd": ledger_usd,
                "provider_usd": provider_usd,
                "difference_usd": provider_usd - ledger_usd,
            }
        )
    provider_total = sum(provider_by_key.values(), zero)
    difference = provider_total - (attributed + unattributed)
    result = {
        "period": f"{first.year:04d}-{first.month:02d}",
        "connection": ",".join(t.name for t in targets),
        "provider_total_usd": provider_total,
        "attributed_usd": attributed,
        "unattributed_usd": unattributed,
        "difference_usd": difference,
        "matches_to_the_cent": round_money(difference, "USD") == 0,
        "customers": [
            {"customer_id": cid, "attributed_usd": v["attributed_usd"], "provider_usd": v["provider_usd"]}
            for cid, v in sorted(customers.items())
        ],
        "keys": key_lines,
    }
    if checked is not None:
        result["price_check"] = brief_price_check(checked)
    return result


def utc_today(clock: Clock) -> date:
    return clock.now().astimezone(UTC).date()


# --------------------------------------------------------------------------- sync runs (history)


def list_sync_runs(engine: Engine, *, connection: str | None = None) -> list[dict]:
    with engine.connect() as conn:
        connection_id = None
        if connection is not None:
            connection_id = store.connection_named(conn, connection).id
        return store.sync_runs_list(conn, connection_id=connection_id)


def get_sync_run(engine: Engine, run_id: str) -> dict:
    with engine.connect() as conn:
        run = store.sync_run(conn, run_id)
    if run is None:
        raise NotFound(f"sync run {run_id!r} not found")
    return run
