"""``keyledger worker [--once]`` and ``keyledger sync`` (sync, then budgets, then due webhooks).

Mounted by ``keyledger.bootstrap`` (the CLI and the worker are peers in the layering). ``sync`` lives here
rather than in ``usage`` because it must evaluate budgets after it commits, and budgets sit above usage.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from keyledger.core import output
from keyledger.core.errors import Invalid
from keyledger.core.money import format_amount
from keyledger.usage import cli as usage_cli
from keyledger.worker.jobs import sync_then_budgets


def sync(
    ctx: typer.Context,
    connection: str | None = typer.Option(None, "--connection", help="Only this connection (name or id)."),
    since: str | None = typer.Option(
        None, "--since", help="Read from this date/time (UTC) instead of the watermark minus the look-back."
    ),
    until: str | None = typer.Option(None, "--until", help="Read up to this date (inclusive) or time."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """Pull usage from Deepgram's request log into the ledger, then evaluate budgets (safe to run
    concurrently and repeatedly)."""
    usage_cli._logs_to_stderr()
    rt = ctx.obj
    since_at = usage_cli.model.parse_instant_option(since, "--since") if since else None
    until_at = usage_cli.model.parse_instant_option(until, "--until", end_of_day=True) if until else None
    if sys.stdout.isatty() and not as_json:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[fetched]} records"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}

            def on_progress(name: str, fetched: int, window: int, windows: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"sync {name}", total=windows, fetched=0)
                bar.update(tasks[name], completed=window, fetched=fetched)

            result = sync_then_budgets(
                rt, connection=connection, since=since_at, until=until_at, progress=on_progress
            )
    else:
        result = sync_then_budgets(rt, connection=connection, since=since_at, until=until_at)
    if result.error is None:
        usage_cli.print_reports(result.reports, as_json=as_json)
    for o in result.budgets:
        if o.fired or o.projected is not None or o.enforced or o.suspended:
            line = f"budget {o.customer_id} {o.period}: spent {format_amount(o.spent)} USD, state {o.state}"
            if o.fired:
                line += f", thresholds reached {','.join(str(t) for t in o.fired)} %"
            if o.revoked_keys:
                line += f", revoked {', '.join(o.revoked_keys)}"
            if o.error:
                line += f" (revoke pending: {o.error})"
            output.err(line)
    if result.error is not None:
        raise result.error


def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run one cycle of every job, then exit."),
    max_seconds: int | None = typer.Option(
        None,
        "--max-seconds",
        help="Stop cleanly after this many seconds (the job in progress finishes).",
    ),
) -> None:
    """Scheduled sync (then budgets), invoice runs at period close, webhook delivery. SIGTERM stops it
    cleanly."""
    from keyledger.worker.runner import Worker

    usage_cli._logs_to_stderr()
    if ctx.obj.settings.secret_key is not None:
        _ = ctx.obj.cipher  # a wrong secret key refuses to start (not at the first delivery)
    if max_seconds is not None and max_seconds < 1:
        raise Invalid(f"--max-seconds must be at least 1, got {max_seconds}")
    w = Worker(ctx.obj)
    w.install_signal_handlers()
    if once:
        ran = w.once()
        print(f"worker: ran {', '.join(ran) if ran else 'nothing (every job is held by another worker)'}")
        return
    print("worker: started (SIGTERM or Ctrl-C stops it)", flush=True)
    cycles = w.run(max_seconds=max_seconds)
    print(f"worker: stopped after {cycles} cycles", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)
    app.command("worker")(worker)
