"""``keyledger plans import|list|show``; listed in ``bootstrap.COMMANDS``.

Commands get the wiring from ``ctx.obj`` (a Runtime with ``engine`` and ``clock``). Human output is Rich
tables; ``--json`` gives stable field names with amounts as decimal strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import typer
from rich.table import Table
from sqlalchemy import Engine

from keyledger.core import output
from keyledger.core.clock import Clock
from keyledger.core.errors import NotFound
from keyledger.core.money import format_amount
from keyledger.pricing import service
from keyledger.pricing.model import Plan, PlanVersion


class RuntimeLike(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def clock(self) -> Clock: ...


plans_app = typer.Typer(help="Pricing plans (YAML or TOML files), versioned by effective date.",
                        no_args_is_help=True)


@plans_app.command("import")
def plans_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A plan file: .yaml, .yml or .toml."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Validate a plan file and store it as a new version, effective from its effective_from."""
    rt: RuntimeLike = ctx.obj
    result = service.import_plan_file(rt.engine, file, clock=rt.clock)
    v = result.version
    if as_json:
        output.emit_json({
            "id": v.plan_id, "name": v.plan.name, "mode": v.plan.mode.value, "currency": v.plan.currency,
            "version": v.version, "version_id": v.id, "effective_from": v.effective_from.isoformat(),
            "created": result.created,
        })
    elif result.created:
        print(f"imported plan {v.plan_id} version {v.version} ({v.plan.name}, {v.plan.mode.value}, "
              f"{v.plan.currency}), effective from {v.effective_from.isoformat()}")
    else:
        print(f"plan {v.plan_id} unchanged: version {v.version} (effective from "
              f"{v.effective_from.isoformat()}) already has these terms")
    if result.backdated:
        output.note(f"version {v.version} takes effect {v.effective_from.isoformat()}, before today: draft "
              "invoices from then on are priced with it when rebuilt; finalized invoices keep their version")


@plans_app.command("list")
def plans_list(ctx: typer.Context, as_json: bool = output.JSON_OPT) -> None:
    """Every plan, its version in effect today and its latest version."""
    rt: RuntimeLike = ctx.obj
    summaries = service.list_plans(rt.engine, today=rt.clock.now().date())
    if as_json:
        output.emit_json([
            {
                "id": s.plan_id, "name": (s.current or s.latest).plan.name,
                "mode": (s.current or s.latest).plan.mode.value, "currency": s.latest.plan.currency,
                "current_version": s.current.version if s.current else None,
                "current_effective_from": s.current.effective_from.isoformat() if s.current else None,
                "latest_version": s.latest.version, "versions": s.versions,
            }
            for s in summaries
        ])
        return
    if not summaries:
        print("no plans yet (import one with: keyledger plans import FILE)")
        return
    table = Table("plan", "name", "mode", "currency", "in effect today", "latest", "versions")
    for s in summaries:
        shown = s.current or s.latest
        current = f"v{s.current.version} since {s.current.effective_from}" if s.current else "— (future only)"
        latest = f"v{s.latest.version} from {s.latest.effective_from}"
        table.add_row(s.plan_id, shown.plan.name, shown.plan.mode.value, s.latest.plan.currency, current,
                      latest, str(s.versions))
    output.console().print(table)


@plans_app.command("show")
def plans_show(
    ctx: typer.Context,
    plan_id: str = typer.Argument(..., metavar="PLAN", help="The plan's id."),
    version: int | None = typer.Option(
        None, "--version", help="Show this version's terms (default: in effect today, else the latest)."
    ),
    as_json: bool = output.JSON_OPT,
) -> None:
    """A plan's versions and the terms of one of them."""
    rt: RuntimeLike = ctx.obj
    versions = service.plan_versions(rt.engine, plan_id)
    try:
        current: PlanVersion | None = service.plan_for(rt.engine, plan_id, rt.clock.now().date())
    except NotFound:
        current = None  # every version starts in the future
    if version is not None:
        chosen = next((v for v in versions if v.version == version), None)
        if chosen is None:
            raise NotFound(f"plan {plan_id!r} has no version {version} (it has 1 to {versions[-1].version})")
    else:
        chosen = current or versions[-1]
    if as_json:
        output.emit_json({
            "id": plan_id, "name": chosen.plan.name, "mode": chosen.plan.mode.value,
            "currency": chosen.plan.currency, "current_version": current.version if current else None,
            "shown_version": chosen.version, "versions": [v.to_dict() for v in versions],
        })
        return
    out = output.console()
    out.print(f"plan {plan_id}: {chosen.plan.name}", markup=False)
    vt = Table("version", "effective from", "imported", "source", "")
    for v in versions:
        mark = "in effect today" if current and v.id == current.id else ""
        vt.add_row(str(v.version), str(v.effective_from), v.imported_at.strftime("%Y-%m-%d %H:%M"),
                   v.source_name, mark)
    out.print(vt)
    out.print(f"terms of version {chosen.version}:", markup=False)
    for line in _terms(chosen.plan):
        out.print(f"  {line}", markup=False)
    if chosen.plan.rates:
        rt_table = Table("rate (pattern)", "unit", "price", "tiers")
        for r in chosen.plan.rates:
            if r.price is not None:
                rt_table.add_row(r.pattern.text, r.unit, format_amount(r.price), "")
            else:
                tiers = "; ".join(
                    f"{'up to ' + format_amount(t.up_to) if t.up_to is not None else 'above'}: "
                    f"{format_amount(t.price)}" for t in r.tiers
                )
                rt_table.add_row(r.pattern.text, r.unit, "", f"{r.tier_mode.value}: {tiers}")
        out.print(rt_table)


def _terms(plan: Plan) -> list[str]:
    cur = plan.currency
    lines = [f"mode {plan.mode.value}, currency {cur}, effective from {plan.effective_from}"]
    if plan.markup_percent:
        lines.append(f"markup {format_amount(plan.markup_percent)} % on provider cost")
    lines.append(f"base fee {format_amount(plan.base_fee)} {cur}, minimum usage charge "
                 f"{format_amount(plan.minimum)} {cur}, tax {format_amount(plan.tax_percent)} %")
    byo = "priced by this plan" if plan.byo_pricing.value == "plan" else "shown at zero"
    lines.append(f"BYO usage: {byo}")
    for inc in plan.included:
        lines.append(f"included per period: {format_amount(inc.quantity)} of {inc.pattern.text}")
    for key, rate in plan.exchange_rates:
        lines.append(f"exchange rate {key}: USD 1 = {cur} {format_amount(rate)}")
    return lines
