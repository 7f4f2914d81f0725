"""The ``keyledger demo`` command (mounted by bootstrap, which supplies the runtime factory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from keyledger.core.config import Settings


def register(app: typer.Typer, make_runtime: Callable[[Settings, dict[str, str]], Any]) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for the database and invoices."),
        port: int = typer.Option(8765, "--port", help="Port for the bundled Deepgram emulator."),
        seed: int = typer.Option(7, "--seed", help="Seed of the generated traffic."),
    ) -> None:
        """The whole product end to end against the bundled Deepgram emulator, on SQLite."""
        from keyledger.demo.run import run_demo

        run_demo(make_runtime, out_dir=out, port=port, seed=seed)
