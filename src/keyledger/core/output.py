"""What every command line prints with: JSON on stdout, Rich tables on stdout, notes and errors on stderr.

Below every feature's ``cli`` module, so each of them prints the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (stable field names).")


def emit_json(data: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """``data`` as indented JSON on stdout (``default`` converts what json cannot)."""
    sys.stdout.write(json.dumps(data, default=default, indent=2) + "\n")


def console() -> Console:
    """A console on stdout; wide when piped, so tables in logs and CI output are not truncated."""
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)


def err(text: str) -> None:
    """``text`` on stderr, as is (no Rich markup)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)


def note(text: str) -> None:
    """``note: text`` on stderr."""
    err(f"note: {text}")
