"""``keyledger budgets set|list|remove|check``; listed in ``bootstrap.COMMANDS``.

``budgets list --json`` is the §11 contract ``[{customer_id, period, limit, spent, thresholds, action,
state}]`` (plus ``external_id``, ``percent``, ``fired``, ``customer_status``). Amounts are USD of provider
cost, as exact decimal strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from keyledger.budgets.service import BudgetService
from keyledger.core import output
from keyledger.core.money import format_amount

budgets_app = typer.Typer(
    help="Per-customer spend caps (USD of Deepgram cost per period).", no_args_is_help=True
)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return format_amount(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


@budgets_app.command("set")
def budgets_set(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id or external id."),
    limit: str = typer.Option(
        ..., "--limit", help="Spend cap per period, USD of Deepgram cost, e.g. 250.00."
    ),
    period: str = typer.Option(
        "month", "--period", help="Budget period (month, in the customer's time zone)."
    ),
    thresholds: str = typer.Option("50,80,100", "--thresholds", help="Alert thresholds, whole percents."),
    action: str = typer.Option("notify", "--action", help="At 100 %: notify, or revoke the customer's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set (or replace) a customer's budget."""
    row = BudgetService(ctx.obj, actor="cli").set(
        customer, limit=limit, period=period, thresholds=thresholds, action=action
    )
    if as_json:
        output.emit_json(_jsonable(row))
        return
    print(
        f"budget for {row['external_id']}: {format_amount(row['limit'])} USD per {period}, thresholds "
        f"{','.join(str(t) for t in row['thresholds'])} %, action {row['action']} "
        f"(spent {format_amount(row['spent'])} in {row['period']})"
    )


@budgets_app.command("list")
def budgets_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Every budget with this period's spend and state."""
    rows = BudgetService(ctx.obj).list()
    if as_json:
        output.emit_json(_jsonable(rows))
        return
    if not rows:
        print("no budgets (set one: keyledger budgets set CUSTOMER --limit AMOUNT)")
        return
    table = Table(title="budgets")
    for col in ("customer", "period", "limit (USD)", "spent (USD)", "%", "thresholds", "action", "state"):
        table.add_column(col, justify="right" if col in ("limit (USD)", "spent (USD)", "%") else "left")
    for r in rows:
        table.add_row(
            escape(r["external_id"]),
            r["period"],
            format_amount(r["limit"]),
            format_amount(r["spent"].quantize(Decimal("0.0001"))),
            format_amount(r["percent"]),
            ",".join(str(t) for t in r["thresholds"]),
            r["action"],
            r["state"],
        )
    output.console().print(table)


@budgets_app.command("remove")
def budgets_remove(
    ctx: typer.Context, customer: str = typer.Argument(..., help="Customer id or external id.")
) -> None:
    """Remove a customer's budget."""
    BudgetService(ctx.obj, actor="cli").remove(customer)
    print(f"budget of {customer} removed")


@budgets_app.command("check")
def budgets_check(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Evaluate every budget now (``keyledger sync`` and the worker do this after each sync)."""
    outcomes = BudgetService(ctx.obj).evaluate_all()
    rows = [
        {
            "customer_id": o.customer_id,
            "period": o.period,
            "spent": o.spent,
            "state": o.state,
            "fired": list(o.fired),
            "revoked_keys": o.revoked_keys,
            "error": o.error,
        }
        for o in outcomes
    ]
    if as_json:
        output.emit_json(_jsonable(rows))
        return
    for r in rows:
        print(
            f"{r['customer_id']} {r['period']}: spent {format_amount(r['spent'])} USD, state {r['state']}"
            + (f", fired {r['fired']}" if r["fired"] else "")
            + (f" ({r['error']})" if r["error"] else "")
        )
