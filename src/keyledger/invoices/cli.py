"""``keyledger invoices run|list|show|finalize|void|mark-paid|credit|credit-note|export`` and
``keyledger report margin``.

Errors are domain errors (one line, exit 1, mapped by the CLI root); nothing is half-written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from keyledger.core import output
from keyledger.core.errors import Invalid
from keyledger.invoices.model import parse_shard
from keyledger.invoices.render import CREDIT_NOTE_FORMATS, FORMATS, Issuer, render, render_credit_note
from keyledger.invoices.service import InvoiceService

invoices_app = typer.Typer(
    help="Invoices: draft -> finalized -> paid | void, credit notes.", no_args_is_help=True
)
report_app = typer.Typer(help="Reports over issued invoices.", no_args_is_help=True)



def _service(ctx: typer.Context) -> InvoiceService:
    rt = ctx.obj
    return InvoiceService.from_settings(rt.engine, rt.clock, rt.settings)


def _print_invoice(inv: dict[str, Any], verb: str) -> None:
    who = inv.get("number") or inv["id"]
    print(f"{verb} {who} ({inv['id']}): {inv['status']}, {inv['period']}, {inv['total']} {inv['currency']}")


@invoices_app.command("run")
def run(
    ctx: typer.Context,
    period: str = typer.Option(..., "--period", help="YYYY-MM, in each customer's time zone."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer (id or external id)."),
    finalize: bool = typer.Option(False, "--finalize", help="Finalize each draft built (assigns numbers)."),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: only the customers in shard I of N (split a run over N workers)."
    ),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Build (or rebuild) one draft per customer for the period; finalized invoices never change."""
    report = _service(ctx).run(
        period, customer=customer, finalize=finalize, shard=None if shard is None else parse_shard(shard)
    )
    if as_json:
        output.emit_json(report.to_dict())
    else:
        table = Table(title=f"Invoices for {report.period}")
        for col in ("customer", "outcome", "invoice", "total", "note"):
            table.add_column(col, justify="right" if col == "total" else "left")
        for e in report.entries:
            total = "" if e.total is None else f"{e.to_dict()['total']} {e.currency}"
            table.add_row(
                escape(e.customer), e.outcome, e.number or e.invoice_id or "", total, escape(e.message)
            )
        output.console().print(table)
    for e in report.entries:
        if e.outcome == "skipped":
            output.err(f"warning: customer {e.customer} skipped: {e.message}")
    if report.failed:
        for e in report.failed:
            output.err(f"error: customer {e.customer}: {e.message}")
        raise typer.Exit(1)


@invoices_app.command("list")
def list_(
    ctx: typer.Context,
    period: str | None = typer.Option(None, "--period", help="YYYY-MM"),
    customer: str | None = typer.Option(None, "--customer"),
    status: str | None = typer.Option(None, "--status", help="draft | finalized | paid | void"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Invoices, by period and customer."""
    rows = _service(ctx).list(period=period, customer=customer, status=status)
    if as_json:
        output.emit_json(rows)
        return
    table = Table()
    for col in ("number", "id", "status", "customer", "period", "total"):
        table.add_column(col, justify="right" if col == "total" else "left")
    for r in rows:
        table.add_row(
            r["number"] or "—",
            r["id"],
            r["status"],
            r["customer_id"],
            r["period"],
            f"{r['total']} {r['currency']}",
        )
    output.console().print(table)


@invoices_app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="N", help="Invoice id or number."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """One invoice with its lines."""
    doc = _service(ctx).get(ref)
    if as_json:
        output.emit_json(doc)
        return
    out = output.console()
    out.print(
        f"{doc['number'] or 'draft'} ({doc['id']})  {doc['status']}  {doc['customer']['name']} "
        f"[{doc['customer']['external_id']}]  period {doc['period']} ({doc['timezone']})  "
        f"plan {doc['plan']['id']} v{doc['plan']['version']}",
        markup=False,
    )
    table = Table()
    for col in ("#", "description", "quantity", "unit", "unit price", "amount", "provider cost USD"):
        table.add_column(col, justify="left" if col in ("description", "unit") else "right")
    for i, line in enumerate(doc["lines"], start=1):
        desc = escape(("[late] " if line["late_adjustment"] else "") + line["description"])
        table.add_row(
            str(i),
            desc,
            line["quantity"] or "",
            line["unit"] or "",
            line["unit_price"] or "",
            line["amount"],
            line["provider_cost_usd"],
        )
    out.print(table)
    out.print(
        f"subtotal {doc['subtotal']}  tax ({doc['tax_percent']}%) {doc['tax']}  "
        f"total {doc['total']} {doc['currency']}",
        markup=False,
    )
    for cn in doc["credit_notes"]:
        out.print(
            f"credit note {cn['number']}: -{cn['total']} {cn['currency']} ({cn['reason']})", markup=False
        )


@invoices_app.command("finalize")
def finalize(
    ctx: typer.Context, ref: str = typer.Argument(..., metavar="N"), as_json: bool = output.JSON_OPT
) -> None:
    """Freeze a draft and give it the next invoice number."""
    svc = _service(ctx)
    inv = svc.finalize(ref)
    output.emit_json(svc.get(inv["id"])) if as_json else _print_invoice(svc.get(inv["id"]), "finalized")


@invoices_app.command("void")
def void(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="N"),
    reason: str | None = typer.Option(None, "--reason"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Void a finalized invoice (it keeps its number; its usage can be invoiced again by a new run)."""
    svc = _service(ctx)
    inv = svc.void(ref, reason=reason)
    output.emit_json(svc.get(inv["id"])) if as_json else _print_invoice(svc.get(inv["id"]), "voided")


@invoices_app.command("mark-paid")
def mark_paid(
    ctx: typer.Context, ref: str = typer.Argument(..., metavar="N"), as_json: bool = output.JSON_OPT
) -> None:
    """Record that a finalized invoice was paid."""
    svc = _service(ctx)
    inv = svc.mark_paid(ref)
    output.emit_json(svc.get(inv["id"])) if as_json else _print_invoice(svc.get(inv["id"]), "paid")


@invoices_app.command("credit")
def credit(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="N"),
    reason: str = typer.Option(..., "--reason", help="Why (printed on the credit note)."),
    amount: str | None = typer.Option(None, "--amount", help="Credit this amount before tax (tax is added)."),
    line: list[int] | None = typer.Option(None, "--line", help="Credit this line (position); repeatable."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Issue a credit note against a finalized or paid invoice (default: everything left to credit)."""
    note = _service(ctx).credit(ref, reason=reason, amount=amount, lines=line or None)
    if as_json:
        output.emit_json(note)
    else:
        _print_credit_note(note)


def _print_credit_note(note: dict[str, Any]) -> None:
    print(
        f"credit note {note['number']} ({note['id']}) for {note['invoice_number']}: "
        f"{note['subtotal']} + tax {note['tax']} = {note['total']} {note['currency']}"
    )


@invoices_app.command("credit-note")
def credit_note(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="CN", help="The credit note's number or id."),
    fmt: str | None = typer.Option(None, "--format", help="pdf | html | json: write the document."),
    out: Path | None = typer.Option(
        None, "--out", help="File to write (default: stdout; pdf needs --out or a non-terminal stdout)."
    ),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Show a credit note, or write it as a PDF, HTML or JSON document (with --format)."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in CREDIT_NOTE_FORMATS:
            raise Invalid(f"--format {fmt!r}: use one of {', '.join(CREDIT_NOTE_FORMATS)}")
    elif out is not None:
        raise Invalid("--out writes a document: give --format pdf, html or json too")
    note = _service(ctx).credit_note(ref)
    if fmt is not None:
        _write_document(render_credit_note(note, fmt, Issuer.from_settings(ctx.obj.settings)), fmt, out)
    elif as_json:
        output.emit_json(note)
    else:
        _print_credit_note(note)
        print(f"reason: {note['reason']}")


@invoices_app.command("export")
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="N"),
    fmt: str = typer.Option(..., "--format", help="pdf | html | csv | json"),
    out: Path | None = typer.Option(
        None, "--out", help="File to write (default: stdout; pdf needs --out or a non-terminal stdout)."
    ),
) -> None:
    """Write the invoice as PDF, HTML, CSV or JSON."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise Invalid(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    rt = ctx.obj
    _write_document(render(_service(ctx).get(ref), fmt, Issuer.from_settings(rt.settings)), fmt, out)


def _write_document(data: bytes, fmt: str, out: Path | None) -> None:
    """A rendered document to ``out`` (written whole: a ``.part`` file renamed) or to stdout."""
    if out is None:
        if fmt == "pdf" and sys.stdout.isatty():
            raise Invalid("a PDF is binary: give --out FILE or redirect stdout")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        raise Invalid(f"cannot write {out}: {exc.strerror}") from None
    print(f"wrote {out} ({len(data)} bytes)")


@report_app.command("margin")
def margin(
    ctx: typer.Context,
    period: str = typer.Option(..., "--period", help="YYYY-MM"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Price vs provider cost per customer and line item, from the period's invoices (void excluded)."""
    rep = _service(ctx).margin(period)
    if as_json:
        output.emit_json(rep)
        return
    table = Table(
        title=f"Margin {rep['period']} (amounts in the invoice currency; provider cost converted "
        "at the invoice's exchange rate)"
    )
    for col in (
        "customer",
        "invoice",
        "line item",
        "amount",
        "provider cost USD",
        "provider cost",
        "margin",
        "%",
    ):
        table.add_column(col, justify="left" if col in ("customer", "invoice", "line item") else "right")
    for c in rep["customers"]:
        cur = c["currency"]
        for r in c["lines"]:
            table.add_row(
                escape(c["customer"]),
                c["number"] or f"{c['status']}",
                r["line_item"],
                f"{r['amount']} {cur}",
                r["provider_cost_usd"],
                f"{r['provider_cost']} {cur}",
                f"{r['margin']} {cur}",
                r["margin_percent"] or "",
            )
        note = f" (credited {c['credited']})" if c["credited"] and c["credited"].strip("0.") else ""
        table.add_row(
            escape(c["customer"]),
            "",
            f"[b]total{note}[/b]",
            f"{c['amount']} {cur}",
            c["provider_cost_usd"],
            f"{c['provider_cost']} {cur}",
            f"{c['margin']} {cur}",
            c["margin_percent"] or "",
            end_section=True,
        )
    for t in rep["totals"]:
        table.add_row(
            "all",
            "",
            "",
            f"{t['amount']} {t['currency']}",
            t["provider_cost_usd"],
            f"{t['provider_cost']} {t['currency']}",
            f"{t['margin']} {t['currency']}",
            t["margin_percent"] or "",
        )
    output.console().print(table)
