"""``keyledger admin-tokens create|list|revoke`` and ``keyledger tokens grant``; mounted by
``keyledger.cli.main``. Tokens are printed once, by the command that creates them."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from keyledger.customers.grants import GrantService
from keyledger.customers.tokens import TokenService

admin_tokens_app = typer.Typer(help="Tokens for keyledger's REST API (stored hashed, shown once).",
                               no_args_is_help=True)
tokens_app = typer.Typer(help="Short-lived Deepgram tokens for browsers.", no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (stable field names).")


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@admin_tokens_app.command("create")
def create(ctx: typer.Context, name: str = typer.Argument(..., help="What the token is for."),
           as_json: bool = JSON_OPT) -> None:
    """Create an admin token; it is printed once and stored only as a hash."""
    tok, secret = TokenService(ctx.obj).create_admin(name)
    if as_json:
        _emit_json({"id": tok.id, "name": tok.name, "token": secret})
        return
    print(f"admin token {tok.id} ({tok.name}) created; it is shown only now:")
    print(secret)


@admin_tokens_app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Admin tokens (never the tokens themselves)."""
    tokens = TokenService(ctx.obj).list_admin()
    if as_json:
        _emit_json([t.to_json() for t in tokens])
        return
    if not tokens:
        print("no admin tokens (create one: keyledger admin-tokens create NAME)")
        return
    table = Table("id", "name", "status", "created", "revoked")
    for t in tokens:
        table.add_row(t.id, t.name, t.status, f"{t.created_at:%Y-%m-%d %H:%M}",
                      f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "—")
    Console(highlight=False, width=None if sys.stdout.isatty() else 240).print(table)


@admin_tokens_app.command("revoke")
def revoke(ctx: typer.Context, token: str = typer.Argument(..., metavar="ID_OR_NAME"),
           as_json: bool = JSON_OPT) -> None:
    """Revoke an admin token: the API refuses it (401) from now on."""
    tok = TokenService(ctx.obj).revoke_admin(token)
    if as_json:
        _emit_json(tok.to_json())
        return
    print(f"admin token {tok.id} ({tok.name}) revoked")


@tokens_app.command("grant")
def grant(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id or external id."),
    ttl: int | None = typer.Option(None, "--ttl", help="Seconds, 1 to 3600 (Deepgram's default: 30)."),
    as_json: bool = JSON_OPT,
) -> None:
    """A short-lived Deepgram token from the customer's own key (its usage is attributed to them)."""
    g = GrantService(ctx.obj).grant(customer, ttl_seconds=ttl)
    if as_json:
        _emit_json({"access_token": g.access_token, "expires_in": g.expires_in})
        return
    print(f"access token (expires in {g.expires_in} s):")
    print(g.access_token)
