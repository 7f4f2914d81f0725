"""The ``keyledger demo`` command (mounted by bootstrap, which supplies the runtime factory and the
server app, so the demo can end by serving the dashboard on its own data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from keyledger.core.config import Settings


def register(
    app: typer.Typer,
    make_runtime: Callable[[Settings, dict[str, str]], Any],
    make_server_app: Callable[[Any], Any],
) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for the database and invoices."),
        port: int = typer.Option(8765, "--port", help="Port for the bundled Deepgram emulator."),
        seed: int = typer.Option(7, "--seed", help="Seed of the generated traffic."),
        serve: bool = typer.Option(True, "--serve/--no-serve", help="End by serving the dashboard."),
        dashboard_port: int = typer.Option(8000, "--dashboard-port", help="Port for the dashboard."),
    ) -> None:
        """The whole product end to end against the bundled Deepgram emulator, on SQLite; then the
        dashboard on http://127.0.0.1:8000 until interrupted (Ctrl-C)."""
        from keyledger.demo.run import run_demo

        def serve_dashboard(runtime: Any, console: Console) -> None:
            import uvicorn

            from keyledger.customers.tokens import TokenService

            _, admin_token = TokenService(runtime, actor="demo").create_admin("demo")
            portal = TokenService(runtime, actor="demo").create_portal("acme")["token"]
            base = f"http://127.0.0.1:{dashboard_port}"
            console.print(
                f"\n[bold]dashboard[/] {base}/  — sign in with the admin token [bold]{admin_token}[/]\n"
                f"customer portal for acme: {base}/portal/login?token={portal}\n"
                f"REST API: {base}/api/v1 (OpenAPI at /api/v1/openapi.json). Ctrl-C stops the demo."
            )
            uvicorn.run(make_server_app(runtime), host="127.0.0.1", port=dashboard_port,
                        log_level="warning", access_log=False)

        run_demo(make_runtime, out_dir=out, port=port, seed=seed, serve=serve_dashboard if serve else None)
