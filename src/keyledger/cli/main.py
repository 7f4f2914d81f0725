"""The ``keyledger`` command: the root Typer app, error mapping (one line on stderr, exit 1), and the
sub-apps of every feature. Feature commands reach the wiring through ``ctx.obj`` (a Runtime)."""

from __future__ import annotations

import sys

import typer

from keyledger.core.errors import KeyledgerError

app = typer.Typer(
    name="keyledger",
    help="Customer-managed billing for apps built on the Deepgram API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
