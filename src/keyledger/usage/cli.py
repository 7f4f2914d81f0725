"""``keyledger usage`` and ``keyledger reconcile``, and the output of ``keyledger sync``
(:func:`print_reports`; the command itself lives in ``keyledger.worker.cli``). The root CLI mounts
them with :func:`register`; the wiring (engine, clock, providers) comes from ``ctx.obj`` (the bootstrap
Runtime)."""

from __future__ import annotations

import logging
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog
import typer
from typer.core import TyperCommand

from keyledger.core import output
from keyledger.core.money import format_amount, round_money
from keyledger.usage import model, price_check_service, service


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _usd(value: Decimal) -> str:
    return f"${format_amount(round_money(value, 'USD'))}"


def _logs_to_stderr() -> None:
    """Diagnostics (warnings and worse) go to stderr, never into stdout (which may carry JSON)."""
    if not structlog.is_configured():
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        )


def _open_provider(runtime):
    return lambda connection: runtime.provider_for(connection.id)


def print_reports(reports: list[service.RunReport], *, as_json: bool) -> None:
    """The output of ``keyledger sync`` (``{runs: [...]}`` with --json)."""
    if as_json:
        output.emit_json({"runs": [r.as_json() for r in reports]}, default=_default)
        return
    if not reports:
        print("no connections to sync")
    for r in reports:
        if r.status == "skipped":
            print(f"{r.connection}: skipped ({r.error})")
            continue
        span = (
            f"{r.window_start:%Y-%m-%d %H:%M:%S} .. {r.window_end:%Y-%m-%d %H:%M:%S} UTC"
            if r.window_start and r.window_end
            else "nothing settled yet"
        )
        print(
            f"{r.connection}: fetched {r.fetched}, inserted {r.inserted}, duplicates {r.duplicates}, "
            f"unattributed {r.unattributed} ({span}; {r.api_calls} API calls)"
        )


def usage(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id or external id."),
    from_: str | None = typer.Option(
        None, "--from", help="First day (UTC, inclusive); default: month start."
    ),
    to: str | None = typer.Option(None, "--to", help="Last day (UTC, inclusive); default: today."),
    by: str = typer.Option("line-item", "--by", help="Group by day, line-item or key."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A customer's usage from the ledger's daily rollups. (`keyledger usage price-check --period YYYY-MM`
    prices the ledger with keyledger's copy of Deepgram's price list.)"""
    runtime = ctx.obj
    today = service.utc_today(runtime.clock)
    start = model.parse_date(from_, "--from") if from_ is not None else model.month_of(today)[0]
    end = model.parse_date(to, "--to") if to is not None else today
    report = service.usage_report(runtime.engine, customer=customer, start=start, end=end, by=by)
    if as_json:
        output.emit_json(report, default=_default)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"usage of {report['customer_id']} {report['from']} .. {report['to']}")
    extra = {"day": "day", "key": "api_key_id"}.get(by)
    if extra:
        table.add_column(extra)
    for col in ("line item", "unit", "quantity", "requests", "cost (USD)"):
        table.add_column(col, justify="right" if col in ("quantity", "requests", "cost (USD)") else "left")
    for line in report["lines"]:
        cells = [line[extra]] if extra else []
        cells += [
            line["line_item"],
            line["unit"],
            format_amount(line["quantity"].normalize()),
            str(line["requests"]),
            _usd(line["cost_usd"]),
        ]
        table.add_row(*cells)
    Console().print(table)
    print(f"total: {_usd(report['cost_usd'])} over {report['requests']} requests")


def reconcile(
    ctx: typer.Context,
    period: str = typer.Option(..., "--period", help="The month, YYYY-MM (UTC days)."),
    connection: str | None = typer.Option(None, "--connection", help="Only this connection."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare what the ledger attributed with Deepgram's billing breakdown, to the cent."""
    runtime = ctx.obj
    result = service.reconcile(
        runtime.engine, open_provider=_open_provider(runtime), period=period, connection=connection,
        price_check=price_check_service.config_from(runtime.settings),
    )
    if as_json:
        output.emit_json(result, default=_default)
        return
    print(f"period {result['period']}, connection {result['connection']}")
    print(f"  Deepgram billing:  {_usd(result['provider_total_usd'])}")
    print(f"  attributed:        {_usd(result['attributed_usd'])}")
    print(f"  unattributed:      {_usd(result['unattributed_usd'])}")
    print(
        f"  difference:        {_usd(result['difference_usd'])}"
        + ("  (matches to the cent)" if result["matches_to_the_cent"] else "  (MISMATCH)")
    )
    for c in result["customers"]:
        print(f"  {c['customer_id']}: ledger {_usd(c['attributed_usd'])}, Deepgram {_usd(c['provider_usd'])}")
    if "price_check" in result:
        print(_price_check_line(result["price_check"]))


def _price_check_line(check: dict) -> str:
    """One line: how many records agree with keyledger's price list, and what it could not check."""
    verdict = "all agree" if check["agrees"] else f"{check['disagreeing_records']} DISAGREE"
    line = (
        f"  price check ({check['tier']}): {check['checked_records']} records, {verdict}; "
        f"Deepgram {_usd(check['provider_usd'])} vs list {_usd(check['expected_usd'])}"
    )
    unknown = check["unknown_line_items"]
    if unknown:
        names = [u if isinstance(u, str) else u["line_item"] for u in unknown]
        line += f"; no list price for {', '.join(names)}"
    return line


def price_check(
    ctx: typer.Context,
    period: str = typer.Option(..., "--period", help="The month, YYYY-MM (UTC days)."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer (id or external id)."),
    connection: str | None = typer.Option(None, "--connection", help="Only this connection."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Price each ledger record with keyledger's copy of Deepgram's price list; flag disagreement."""
    runtime = ctx.obj
    report = price_check_service.price_check_report(
        runtime.engine, price_check_service.config_from(runtime.settings),
        period=period, customer=customer, connection=connection,
    )
    if as_json:
        output.emit_json(report, default=_default)
        return
    scope = f", customer {report['customer_id']}" if report["customer_id"] else ""
    print(f"period {report['period']}{scope}, price list {report['price_list']}")
    for line in report["lines"]:
        flag = f"{line['disagreeing_records']} disagree" if line["disagreeing_records"] else "agree"
        print(
            f"  {line['line_item']}: {line['records']} records, Deepgram {_usd(line['provider_usd'])}, "
            f"list {_usd(line['expected_usd'])} ({flag})"
        )
    for u in report["unknown_line_items"]:
        usd = _usd(u["provider_usd"])
        print(f"  {u['line_item']}: {u['records']} records, Deepgram {usd} (no list price)")
    for ex in report["disagreeing_examples"]:
        print(
            f"  ! {ex['request_id']} {ex['line_item']}: Deepgram {format_amount(ex['provider_usd'])}, "
            f"expected {format_amount(ex['expected_usd'])}"
        )
    print(_price_check_line(report).strip())


def register(app: typer.Typer, *, include_sync: bool = False) -> None:
    """Mount the usage commands on the root app. ``sync`` is not among them: ``keyledger.worker.cli``
    mounts it (sync, then budgets, which sit above usage); ``include_sync`` is accepted for callers that
    still pass it and mounts nothing."""
    del include_sync
    app.command("usage", cls=_UsageCommand)(usage)
    app.command("reconcile")(reconcile)
    app.command("price-check")(price_check)


class _UsageCommand(TyperCommand):
    """``keyledger usage price-check …`` runs ``keyledger price-check …``: ``usage`` itself takes a customer
    (the §11 ``usage`` contract), so the price check is a sibling command also reachable under ``usage``."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "price-check" and parent is not None:
            sibling = parent.command.get_command(parent, "price-check")
            if sibling is not None:
                return sibling.make_context(f"{info_name} price-check", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)
