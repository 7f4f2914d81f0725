"""CLI commands for connections, customers, keys and secrets; listed in ``bootstrap.COMMANDS``.

Commands get the wiring from ``ctx.obj`` (``keyledger.bootstrap.Runtime``, typed here by a Protocol so
this layer never imports bootstrap). Human output is Rich tables; ``--json`` is the §11 contract.
Secrets are printed only by the commands that create them (``keys create``/``rotate``, ``reinstate``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.table import Table

from keyledger.core import output
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.customers.model import IssuedKey, Key
from keyledger.customers.secrets import rotate_secret_key
from keyledger.customers.service import ConnectionService, CustomerService, Deps, KeyService


class RuntimeLike(Deps, Protocol):
    settings: Settings
    environ: Mapping[str, str]


connections_app = typer.Typer(help="Deepgram projects keyledger works with.", no_args_is_help=True)
customers_app = typer.Typer(help="The operator's customers.", no_args_is_help=True)
keys_app = typer.Typer(help="Customers' Deepgram API keys.", no_args_is_help=True)
secrets_app = typer.Typer(help="The key that encrypts secrets at rest.", no_args_is_help=True)



def _rt(ctx: typer.Context) -> RuntimeLike:
    return ctx.obj


def _flush_notes(service: KeyService) -> None:
    for n in service.notes:
        output.note(n)


def _dt(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "—"


# ============================================================================ connections


@connections_app.command("add")
def connections_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A short name, e.g. main."),
    project_id: str = typer.Option(..., "--project-id", help="The Deepgram project id."),
    api_key_env: str = typer.Option("DEEPGRAM_API_KEY", "--api-key-env", help="Variable holding the key."),
    base_url: str = typer.Option("https://api.deepgram.com", "--base-url", help="Deepgram API base URL."),
    store_key: bool = typer.Option(
        False, "--store-key", help="Store the key encrypted in the database instead of the variable's name."
    ),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Register a managed Deepgram project after checking its key can manage keys and read usage/billing."""
    rt = _rt(ctx)
    conn = ConnectionService(rt, environ=rt.environ).add(
        name, project_id=project_id, api_key_env=api_key_env, base_url=base_url, store_key=store_key
    )
    if as_json:
        output.emit_json(conn.to_json())
        return
    output.console().print(
        f"connection {conn.name} ({conn.id}) added: project {conn.project_id} at {conn.base_url}, "
        f"key {conn.key_source}",
        markup=False,
    )


@connections_app.command("list")
def connections_list(ctx: typer.Context, as_json: bool = output.JSON_OPT) -> None:
    """List connections."""
    items = ConnectionService(_rt(ctx)).list()
    if as_json:
        output.emit_json([c.to_json() for c in items])
        return
    table = Table(
        "id", "name", "kind", "project", "base URL", "key", "status", "created", title="Connections"
    )
    for c in items:
        table.add_row(
            c.id, c.name, c.kind, c.project_id, c.base_url, c.key_source, c.status, _dt(c.created_at)
        )
    output.console().print(table)


# ============================================================================ customers


def _print_customer(c: Any) -> None:
    table = Table(show_header=False, title=f"Customer {c.external_id}")
    for k, v in c.to_json().items():
        table.add_row(k, "—" if v is None else str(v))
    output.console().print(table)


@customers_app.command("add")
def customers_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The customer's display name."),
    external_id: str = typer.Option(..., "--external-id", help="Your own id for this customer."),
    email: str | None = typer.Option(None, "--email"),
    plan: str | None = typer.Option(None, "--plan"),
    currency: str = typer.Option("USD", "--currency", help="ISO 4217 code."),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone (billing periods)."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Add a customer."""
    c = CustomerService(_rt(ctx)).add(
        name, external_id=external_id, email=email, plan=plan, currency=currency, timezone=timezone
    )
    if as_json:
        output.emit_json(c.to_json())
    else:
        output.console().print(f"customer {c.name} added: {c.id} (external id {c.external_id})", markup=False)


@customers_app.command("list")
def customers_list(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="active or suspended"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """List customers."""
    items = CustomerService(_rt(ctx)).list(status=status)
    if as_json:
        output.emit_json([c.to_json() for c in items])
        return
    table = Table(
        "id",
        "external id",
        "name",
        "email",
        "plan",
        "currency",
        "timezone",
        "status",
        "billing",
        title="Customers",
    )
    for c in items:
        table.add_row(
            c.id,
            c.external_id,
            c.name,
            c.email or "—",
            c.plan or "—",
            c.currency,
            c.timezone,
            c.status,
            c.billing_mode,
        )
    output.console().print(table)


@customers_app.command("show")
def customers_show(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Id or external id."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Show one customer."""
    c = CustomerService(_rt(ctx)).get(customer)
    if as_json:
        output.emit_json(c.to_json())
    else:
        _print_customer(c)


@customers_app.command("update")
def customers_update(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Id or external id."),
    name: str | None = typer.Option(None, "--name"),
    external_id: str | None = typer.Option(None, "--external-id"),
    email: str | None = typer.Option(None, "--email"),
    plan: str | None = typer.Option(None, "--plan"),
    currency: str | None = typer.Option(None, "--currency"),
    timezone: str | None = typer.Option(None, "--timezone"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Change a customer's details."""
    c = CustomerService(_rt(ctx)).update(
        customer,
        name=name,
        external_id=external_id,
        email=email,
        plan=plan,
        currency=currency,
        timezone=timezone,
    )
    if as_json:
        output.emit_json(c.to_json())
    else:
        output.console().print(f"customer {c.id} updated", markup=False)


@customers_app.command("suspend")
def customers_suspend(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Id or external id."),
    keep_keys: bool = typer.Option(False, "--keep-keys", help="Do not revoke the customer's Deepgram keys."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Suspend a customer and revoke their Deepgram keys (reinstate issues new ones)."""
    c, revoked = CustomerService(_rt(ctx)).suspend(customer, revoke_keys=not keep_keys)
    if as_json:
        output.emit_json({**c.to_json(), "revoked_keys": [k.id for k in revoked]})
    else:
        output.console().print(f"customer {c.id} suspended; {len(revoked)} key(s) revoked", markup=False)


@customers_app.command("reinstate")
def customers_reinstate(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Id or external id."),
    no_keys: bool = typer.Option(False, "--no-keys", help="Do not issue replacement keys."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Reactivate a customer and issue a new key for each key the suspension revoked."""
    c, issued = CustomerService(_rt(ctx)).reinstate(customer, recreate_keys=not no_keys)
    if as_json:
        output.emit_json({**c.to_json(), "keys_created": [i.to_json() for i in issued]})
        return
    output.console().print(f"customer {c.id} reinstated; {len(issued)} new key(s)", markup=False)
    for i in issued:
        _print_issued(i)


# ============================================================================ keys


def _print_issued(issued: IssuedKey) -> None:
    k = issued.key
    out = output.console()
    out.print(
        f"key {k.id} for customer {k.customer_id} on {k.connection}: Deepgram api_key_id {k.api_key_id}, "
        f"scopes {', '.join(k.scopes)}, expires {_dt(k.expires_at)}",
        markup=False,
    )
    if issued.secret is not None:
        out.print(f"secret (shown once, store it now): {issued.secret}", markup=False)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id or external id."),
    connection: str | None = typer.Option(None, "--connection", help="Connection name or id."),
    ttl: str | None = typer.Option(None, "--ttl", help="Lifetime, e.g. 90d, 12h (default: no expiry)."),
    scope: list[str] | None = typer.Option(
        None, "--scope", help="Deepgram scope (repeat); default usage:write."
    ),
    comment: str | None = typer.Option(None, "--comment", help="Comment on the Deepgram key."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Create the customer's Deepgram key; prints the secret once."""
    service = KeyService(_rt(ctx))
    issued = service.create(customer, connection=connection, ttl=ttl, scopes=scope, comment=comment)
    _flush_notes(service)
    if as_json:
        output.emit_json(issued.to_json())
    else:
        _print_issued(issued)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    customer: str | None = typer.Option(None, "--customer", help="Customer id or external id."),
    status: str | None = typer.Option(None, "--status", help="active, revoked or expired"),
    as_json: bool = output.JSON_OPT,
) -> None:
    """List keys (never their secrets)."""
    items: list[Key] = KeyService(_rt(ctx)).list(customer=customer, status=status)
    if as_json:
        output.emit_json([k.to_json() for k in items])
        return
    table = Table(
        "id",
        "customer",
        "connection",
        "api_key_id",
        "scopes",
        "status",
        "created",
        "expires",
        "revoked",
        title="Keys",
    )
    for k in items:
        table.add_row(
            k.id,
            k.customer_id,
            k.connection,
            k.api_key_id,
            ", ".join(k.scopes),
            k.status,
            _dt(k.created_at),
            _dt(k.expires_at),
            _dt(k.revoked_at),
        )
    output.console().print(table)


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key id or api_key_id."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Create a replacement key, then delete the old one; prints the new secret once."""
    service = KeyService(_rt(ctx))
    issued, old = service.rotate(key)
    _flush_notes(service)
    if as_json:
        output.emit_json({**issued.to_json(), "replaced": old.to_json()})
        return
    _print_issued(issued)
    output.console().print(f"old key {old.id} ({old.api_key_id}) revoked", markup=False)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key id or api_key_id."),
    as_json: bool = output.JSON_OPT,
) -> None:
    """Delete the key at Deepgram; the ledger keeps it (revoked) so its usage stays attributed."""
    k, already = KeyService(_rt(ctx)).revoke(key)
    if as_json:
        output.emit_json(k.to_json())
    else:
        output.console().print(
            f"key {k.id} {'was already' if already else ''} revoked".replace("  ", " "), markup=False
        )


# ============================================================================ secrets


@secrets_app.command("rotate")
def secrets_rotate(ctx: typer.Context, as_json: bool = output.JSON_OPT) -> None:
    """Re-encrypt every stored secret under a new key (keyledger.toml is updated)."""
    rt = _rt(ctx)
    result = rotate_secret_key(rt, config_path=Path(rt.settings.config_path), environ=dict(rt.environ))
    data = {
        "key_id": result.new_key_id,
        "previous_key_ids": list(result.old_key_ids),
        "keys": result.keys,
        "connections": result.connections,
        "key_location": result.where,
    }
    if as_json:
        output.emit_json(data)
        return
    where = rt.settings.config_path if result.where == "file" else "KEYLEDGER_SECRET_KEY"
    output.console().print(
        f"re-encrypted {result.keys} key secret(s) and {result.connections} connection key(s) under key "
        f"{result.new_key_id}; all verified. Secret key in {where}.",
        markup=False,
    )
    if result.where == "env":
        output.note("you may now remove the older keys from KEYLEDGER_SECRET_KEY")


@secrets_app.command("generate-key")
def secrets_generate_key() -> None:
    """Print a fresh secret key (for KEYLEDGER_SECRET_KEY)."""
    sys.stdout.write(generate_key() + "\n")
