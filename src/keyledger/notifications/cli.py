"""``keyledger webhooks add|list|remove|replay|events|attempts|deliver``; listed in ``bootstrap.COMMANDS``.

``webhooks add --json`` answers ``{id, url, events, secret}`` — the ``whsec_`` secret is shown once, here;
it is stored encrypted and never printed again (not in ``list``, logs or errors).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from keyledger.core import output
from keyledger.notifications.service import Deliverer, WebhookService

webhooks_app = typer.Typer(help="Outbound webhooks (Standard Webhooks signatures).", no_args_is_help=True)


def _svc(ctx: typer.Context) -> WebhookService:
    rt = ctx.obj
    return WebhookService(rt.engine, rt.cipher, rt.clock, actor="cli",
                          allow_private=bool(rt.settings.webhook_allow_private_networks))


def deliverer_for(rt: Any) -> Deliverer:
    return Deliverer(
        rt.engine, rt.cipher, rt.clock, allow_private=bool(rt.settings.webhook_allow_private_networks)
    )


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="The receiver's URL (http or https)."),
    events: str | None = typer.Option(None, "--events", help="Comma-separated event types (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON {id, url, events, secret}."),
) -> None:
    """Add an endpoint; prints its signing secret once."""
    out = _svc(ctx).add(url, events)
    if as_json:
        output.emit_json(out)
        return
    print(f"endpoint {out['id']} -> {out['url']} ({', '.join(out['events'])})")
    print(f"signing secret (shown once, store it now): {out['secret']}")


@webhooks_app.command("list")
def webhooks_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Endpoints (never their secrets) and their delivery counts."""
    rows = _svc(ctx).list()
    if as_json:
        output.emit_json(rows)
        return
    if not rows:
        print("no webhook endpoints (add one: keyledger webhooks add URL)")
        return
    table = Table(title="webhook endpoints")
    for col in ("id", "url", "events", "status", "pending", "delivered", "failed"):
        table.add_column(col)
    for r in rows:
        d = r["deliveries"]
        status = r["status"] + (f" ({r['disabled_reason']})" if r["disabled_reason"] else "")
        table.add_row(
            r["id"],
            escape(r["url"]),
            ",".join(r["events"]),
            escape(status),
            str(d["pending"]),
            str(d["delivered"]),
            str(d["failed"]),
        )
    output.console().print(table)


@webhooks_app.command("remove")
def webhooks_remove(ctx: typer.Context, endpoint_id: str = typer.Argument(..., help="Endpoint id.")) -> None:
    """Remove an endpoint (its pending deliveries are cancelled)."""
    _svc(ctx).remove(endpoint_id)
    print(f"endpoint {endpoint_id} removed")


@webhooks_app.command("replay")
def webhooks_replay(
    ctx: typer.Context, event_id: str = typer.Argument(..., help="Event id (msg_…).")
) -> None:
    """Send an event again (same webhook-id) to every active endpoint subscribed to its type."""
    n = _svc(ctx).replay(event_id)
    print(
        f"event {event_id} queued for {n} endpoint(s); the worker (or `keyledger webhooks deliver`) sends it"
    )


@webhooks_app.command("events")
def webhooks_events(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recent events in the outbox."""
    rows = _svc(ctx).events(limit)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        print(f"{r['created_at']}  {r['id']}  {r['type']}")


@webhooks_app.command("attempts")
def webhooks_attempts(
    ctx: typer.Context,
    event_id: str | None = typer.Option(None, "--event", help="Only this event."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The delivery log: one line per HTTP attempt."""
    rows = _svc(ctx).attempts(event_id)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        print(
            f"{r['at']}  {r['event_id']} -> {r['endpoint_id']}  #{r['attempt']}  "
            f"{r['status_code'] or '-'}  {r['error'] or 'ok'}  {r['duration_ms']} ms"
        )


@webhooks_app.command("deliver")
def webhooks_deliver(ctx: typer.Context) -> None:
    """Send every due delivery now (the worker does this continuously)."""
    rep = deliverer_for(ctx.obj).deliver_due()
    print(
        f"attempted {rep.attempted}: delivered {rep.delivered}, retrying {rep.retrying}, failed {rep.failed}"
    )
