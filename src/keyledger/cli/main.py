"""The ``keyledger`` command: the root Typer app, error mapping (one line on stderr, exit 1), and lazy
loading of every sub-command. Feature commands reach the wiring through ``ctx.obj`` (a Runtime).

The commands themselves are listed once, in ``keyledger.bootstrap.COMMANDS`` (the wiring point), as
:class:`Lazy` entries: a name, where the command lives (``"module:attribute"``) and its one-line help.
``keyledger <cmd> …`` imports only ``<cmd>``'s module; ``keyledger --help`` imports none of them (it shows
the help recorded in the entry; ``tests/cli/test_lazy_commands.py`` checks it against the real command).
This module is imported on every run, so it imports nothing heavy at module level."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from keyledger.core.errors import Invalid, KeyledgerError

HELP = "Customer-managed billing for apps built on the Deepgram API."


@dataclass(frozen=True)
class Lazy:
    """A sub-command loaded on first use.

    ``target`` is ``"module:attribute"``: either a Typer sub-app (mounted as ``name``, like
    ``add_typer``), or a function ``register(app)`` that mounts the command ``name`` on ``app`` (it may
    mount siblings too; only ``name`` is taken). ``help`` is the first paragraph of the command's help,
    shown by ``keyledger --help`` without importing ``target``."""

    name: str
    target: str
    help: str


def load(entry: Lazy) -> Any:
    """Import ``entry.target`` and build its (click) command exactly as mounting it on the root app would."""
    module, _, attribute = entry.target.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer()
    if isinstance(obj, typer.Typer):
        holder.add_typer(obj, name=entry.name)
    else:
        obj(holder)
    command = typer.main.get_group(holder).commands.get(entry.name)
    if command is None:
        raise LookupError(f"{entry.target} does not mount a command named {entry.name!r}")
    return command


class LazyGroup(TyperGroup):
    """The root group: every command starts as a stub holding its name and help; ``get_command`` swaps in
    the real command (importing its module) except while the root's own help is being written."""

    entries: Sequence[Lazy] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._lazy = {e.name: e for e in self.entries}
        self._stubs = {e.name: TyperCommand(name=e.name, help=e.help) for e in self.entries}
        # One namespace, in the table's order: the stubs keep `list_commands` and typo suggestions whole.
        self.commands = {**self._stubs, **self.commands}
        self._writing_help = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._writing_help:
            return self.commands.get(cmd_name)
        if cmd_name in self._lazy and self.commands.get(cmd_name) is self._stubs[cmd_name]:
            self.commands[cmd_name] = load(self._lazy[cmd_name])
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._writing_help = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._writing_help = False


def build_app(entries: Sequence[Lazy]) -> typer.Typer:
    """The root app over ``entries`` (in ``keyledger --help`` order)."""
    group = type("KeyledgerGroup", (LazyGroup,), {"entries": tuple(entries)})
    return typer.Typer(
        name="keyledger",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=group,
    )


# ---------------------------------------------------------------------------- init


def _database_state(engine) -> tuple[str | None, str]:
    from keyledger.db.migrate import current_heads, heads

    current = current_heads(engine)
    return (",".join(sorted(current)) or None), ",".join(sorted(heads()))


def init(ctx: typer.Context) -> None:
    """Create keyledger.toml (with a fresh secret key) and the database. Safe to run again."""
    from keyledger.core.crypto import generate_key
    from keyledger.customers.secrets import create_config_file, file_secret_key, render_config
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


def register_init(app: typer.Typer) -> None:
    app.command("init")(init)


# ---------------------------------------------------------------------------- running


def _database_error(exc: BaseException) -> bool:
    # SQLAlchemy is imported only by commands that use a database: an exception cannot be one of its
    # errors unless it was imported, and `keyledger --help` must not pay for importing it.
    exc_module = sys.modules.get("sqlalchemy.exc")
    return exc_module is not None and isinstance(exc, exc_module.SQLAlchemyError)


def run(entries: Sequence[Lazy], runtime_factory: Callable[[], Any],
        before: Callable[[], None] | None = None) -> None:
    """Run the CLI over ``entries`` with ``runtime_factory()`` available to commands as ``ctx.obj``;
    ``before()`` (e.g. logging set-up) runs first when a command is about to run, not for the root help.

    A KeyledgerError becomes one line on stderr and exit code 1; usage errors exit 2 (Typer/Click).
    """
    app = build_app(entries)

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        if before is not None:
            before()
        ctx.obj = runtime_factory()

    try:
        app(standalone_mode=False)
    except KeyledgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _database_error(exc):
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            print(f"error: database: {first[0] if first else type(exc).__name__}", file=sys.stderr)
            sys.exit(1)
        # Usage errors (Typer's bundled click exceptions) show themselves and carry their exit code (2).
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
