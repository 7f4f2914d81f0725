"""The one place things are wired: configuration -> engine, cipher, provider factory, clock.

``main()`` is the ``keyledger`` console script. Feature CLIs receive a :class:`Runtime` via ``ctx.obj``:

- ``runtime.settings``, ``runtime.clock``, ``runtime.engine`` (lazy), ``runtime.environ``
- ``runtime.cipher`` (lazy; raises Invalid when no secret key is configured)
- ``runtime.make_provider(credentials)`` -> Provider for explicit credentials
- ``runtime.provider_for(connection)`` -> Provider for a ``connections`` row, or a connection id/name
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import structlog
import typer
from sqlalchemy import Engine, Row

from keyledger.core.clock import Clock, SystemClock
from keyledger.core.config import Settings, load_settings
from keyledger.core.crypto import Cipher
from keyledger.core.errors import Invalid
from keyledger.customers import store as customer_store
from keyledger.customers.at_rest import verify_secret_key
from keyledger.customers.service import connection_credentials
from keyledger.db.engine import make_engine
from keyledger.provider.deepgram import DeepgramProvider
from keyledger.provider.port import Provider, ProviderCredentials, ProviderFactory


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # Tests and the demo may swap the provider factory; the default talks HTTP to Deepgram (or dgemu).
    provider_factory: ProviderFactory | None = None

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def cipher(self) -> Cipher:
        if self.settings.secret_key is None or not self.settings.secret_key.get_secret_value().strip():
            raise Invalid("no secret key configured (run `keyledger init` or set KEYLEDGER_SECRET_KEY)")
        cipher = Cipher.from_config(self.settings.secret_key.get_secret_value())
        verify_secret_key(self.engine, cipher)  # a wrong key refuses to run, never mis-decrypts
        return cipher

    def _default_provider(self, credentials: ProviderCredentials) -> Provider:
        return DeepgramProvider(
            credentials,
            timeout=self.settings.provider_timeout_seconds,
            max_retries=self.settings.provider_max_retries,
        )

    def make_provider(self, credentials: ProviderCredentials) -> Provider:
        return (self.provider_factory or self._default_provider)(credentials)

    def provider_for(self, connection: Row | str) -> Provider:
        """A Provider for a connection (its row, or its id or name), with the connection's key
        (decrypted from the database, or read from the environment variable it names)."""
        if isinstance(connection, str):
            with self.engine.connect() as db:
                connection = customer_store.connection_row(db, connection)
        cipher = self.cipher if connection._mapping["api_key_ciphertext"] is not None else None
        return self.make_provider(connection_credentials(connection, cipher, self.environ))


def make_runtime(settings: Settings, environ: Mapping[str, str] | None = None) -> Runtime:
    return Runtime(settings=settings, environ=environ if environ is not None else os.environ)


def create_server_app(runtime: Runtime):
    """What ``keyledger serve`` serves: the REST API at ``/api/v1`` plus the web UI (operator dashboard at
    ``/``, customer portal at ``/portal``). The API and the web UI are peers; they meet only here."""
    from keyledger.api import create_app
    from keyledger.web import install

    return install(create_app(runtime))


def register_serve(app) -> None:
    """``keyledger serve``: mounted here because the CLI and the API are peers (neither imports the other)."""

    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", help="Port to listen on."),
    ) -> None:
        """Serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json) and the web UI (/ and /portal)."""
        import uvicorn

        runtime = ctx.obj
        _ = runtime.cipher  # refuse to start without a secret key rather than fail on the first request
        print(f"keyledger API on http://{host}:{port}/api/v1 (OpenAPI: /api/v1/openapi.json); "
              f"dashboard on http://{host}:{port}/ and customer portal on /portal", flush=True)
        uvicorn.run(create_server_app(runtime), host=host, port=port, log_level="warning", access_log=False)


def configure_logging(level: int = logging.WARNING) -> None:
    """Structured logs go to stderr (stdout is for data, e.g. ``--json``); below WARNING only when asked
    with ``KEYLEDGER_LOG_LEVEL`` (e.g. ``info``). Log lines never carry secrets."""
    name = os.environ.get("KEYLEDGER_LOG_LEVEL", "").upper()
    level = getattr(logging, name, level) if name else level
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


def main() -> None:
    from keyledger.cli.main import app, run

    configure_logging()
    from keyledger.demo.cli import register as register_demo
    from keyledger.worker.cli import register as register_worker

    register_demo(app, make_runtime, create_server_app)
    register_worker(app)  # `sync` (then budgets) and `worker`
    register_serve(app)
    run(lambda: Runtime(settings=load_settings()))


if __name__ == "__main__":
    main()
