"""The ``keyledger`` command: the root Typer app, error mapping (one line on stderr, exit 1), and the
sub-apps of every feature. Feature commands reach the wiring through ``ctx.obj`` (a Runtime)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from sqlalchemy.exc import SQLAlchemyError

from keyledger.budgets.cli import budgets_app
from keyledger.core.crypto import generate_key
from keyledger.core.errors import Invalid, KeyledgerError
from keyledger.customers.cli import connections_app, customers_app, keys_app, secrets_app
from keyledger.customers.secrets import create_config_file, file_secret_key, render_config
from keyledger.customers.tokens_cli import admin_tokens_app, tokens_app
from keyledger.invoices.cli import invoices_app, report_app
from keyledger.notifications.cli import webhooks_app
from keyledger.pricing.cli import plans_app
from keyledger.usage.cli import register as register_usage_commands

app = typer.Typer(
    name="keyledger",
    help="Customer-managed billing for apps built on the Deepgram API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ---------------------------------------------------------------------------- feature sub-apps
# customers/ : connections, customers, keys, secrets
app.add_typer(connections_app, name="connections")
app.add_typer(customers_app, name="customers")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")
app.add_typer(admin_tokens_app, name="admin-tokens")
app.add_typer(tokens_app, name="tokens")

# usage/ : `usage`, `reconcile` (`sync` is mounted by bootstrap from worker/: it evaluates budgets after it
# commits, and budgets sit above usage)
register_usage_commands(app, include_sync=False)

# pricing/ : plans
app.add_typer(plans_app, name="plans")

# invoices/ : invoices, report margin
app.add_typer(invoices_app, name="invoices")
app.add_typer(report_app, name="report")

# budgets/ : budgets; notifications/ : webhooks
app.add_typer(budgets_app, name="budgets")
app.add_typer(webhooks_app, name="webhooks")

# ---------------------------------------------------------------------------- init


def _database_state(engine) -> tuple[str | None, str]:
    from keyledger.db.migrate import current_heads, heads

    current = current_heads(engine)
    return (",".join(sorted(current)) or None), ",".join(sorted(heads()))


@app.command("init")
def init(ctx: typer.Context) -> None:
    """Create keyledger.toml (with a fresh secret key) and the database. Safe to run again."""
    from keyledger.db.migrate import upgrade

    rt = ctx.obj
    path = Path(rt.settings.config_path)
    changed = False
    if path.exists():
        print(f"{path}: exists, unchanged")
        if not rt.environ.get("KEYLEDGER_SECRET_KEY") and not file_secret_key(path):
            raise Invalid(f"{path} has no secret_key and KEYLEDGER_SECRET_KEY is not set")
    else:
        secret = None if rt.environ.get("KEYLEDGER_SECRET_KEY") else generate_key()
        db_url = None if rt.environ.get("KEYLEDGER_DATABASE_URL") else rt.settings.database_url
        create_config_file(path, render_config(database_url=db_url, secret_key=secret))
        how = "new secret key generated" if secret else "secret key from KEYLEDGER_SECRET_KEY"
        print(f"{path}: created (mode 0600, {how})")
        changed = True
    shown = rt.engine.url.render_as_string(hide_password=True)
    current, head = _database_state(rt.engine)
    if current == head:
        print(f"database {shown}: up to date (revision {head})")
    else:
        upgrade(rt.engine)
        print(f"database {shown}: migrated {current or 'empty'} -> {head}")
        changed = True
    print("keyledger is initialized" if changed else "already initialized; nothing changed")


# ---------------------------------------------------------------------------- running


def run(runtime_factory) -> None:
    """Run the CLI with ``runtime_factory()`` available to commands as ``ctx.obj``.

    A KeyledgerError becomes one line on stderr and exit code 1; usage errors exit 2 (Typer/Click).
    """

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = runtime_factory()

    try:
        app(standalone_mode=False)
    except KeyledgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"error: database: {first[0] if first else type(exc).__name__}", file=sys.stderr)
        sys.exit(1)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (Typer's bundled click exceptions) show themselves and carry their exit code (2).
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
