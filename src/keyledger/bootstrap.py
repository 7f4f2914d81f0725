"""The one place things are wired: configuration -> engine, cipher, provider factory, clock.

``main()`` is the ``keyledger`` console script. Feature CLIs receive a :class:`Runtime` via ``ctx.obj``:

- ``runtime.settings``, ``runtime.clock``, ``runtime.engine`` (lazy), ``runtime.environ``
- ``runtime.cipher`` (lazy; raises Invalid when no secret key is configured)
- ``runtime.make_provider(credentials)`` -> Provider for explicit credentials
- ``runtime.provider_for(connection)`` -> Provider for a ``connections`` row, or a connection id/name
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import typer

from keyledger.cli.main import Lazy
from keyledger.core.clock import Clock, SystemClock
from keyledger.core.errors import Invalid

if TYPE_CHECKING:  # every `keyledger` run imports this module: what a command needs, it imports itself
    from sqlalchemy import Engine, Row

    from keyledger.core.config import Settings
    from keyledger.core.crypto import Cipher
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
        from keyledger.db.engine import make_engine

        return make_engine(self.settings.database_url, **pool_options(self.settings))

    @cached_property
    def cipher(self) -> Cipher:
        if self.settings.secret_key is None or not self.settings.secret_key.get_secret_value().strip():
            raise Invalid("no secret key configured (run `keyledger init` or set KEYLEDGER_SECRET_KEY)")
        from keyledger.core.crypto import Cipher
        from keyledger.customers.at_rest import verify_secret_key

        cipher = Cipher.from_config(self.settings.secret_key.get_secret_value())
        verify_secret_key(self.engine, cipher)  # a wrong key refuses to run, never mis-decrypts
        return cipher

    def _default_provider(self, credentials: ProviderCredentials) -> Provider:
        from keyledger.provider.deepgram import DeepgramProvider

        return DeepgramProvider(
            credentials,
            timeout=self.settings.provider_timeout_seconds,
            max_retries=self.settings.provider_max_retries,
            max_response_bytes=self.settings.provider_max_response_bytes,
            max_record_usd=self.settings.provider_max_record_usd,
        )

    def make_provider(self, credentials: ProviderCredentials) -> Provider:
        return (self.provider_factory or self._default_provider)(credentials)

    def provider_for(self, connection: Row | str) -> Provider:
        """A Provider for a connection (its row, or its id or name), with the connection's key
        (decrypted from the database, or read from the environment variable it names)."""
        from keyledger.customers import store as customer_store
        from keyledger.customers.service import connection_credentials

        if isinstance(connection, str):
            with self.engine.connect() as db:
                connection = customer_store.connection_row(db, connection)
        cipher = self.cipher if connection._mapping["api_key_ciphertext"] is not None else None
        return self.make_provider(connection_credentials(connection, cipher, self.environ))


def pool_options(settings: Settings) -> dict[str, int]:
    """The connection pool of each process (PostgreSQL only; SQLite keeps SQLAlchemy's defaults)."""
    from keyledger.db.engine import normalize_url

    if not normalize_url(settings.database_url).startswith("postgresql"):
        return {}
    return {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            "pool_recycle": settings.db_pool_recycle_seconds}


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
        # uvicorn's own log format only for the console; with JSON logs its loggers reach our root handler.
        as_json = runtime.environ.get("KEYLEDGER_LOG_FORMAT", "").strip().lower() == "json"
        uvicorn.run(create_server_app(runtime), host=host, port=port, log_level="warning", access_log=False,
                    **({"log_config": None} if as_json else {}))


SECRET_KEY_PARTS = ("secret", "token", "password", "authorization", "api_key", "apikey", "cookie",
                    "credential", "ciphertext", "private_key")
SECRET_VALUE = re.compile(r"\b(kla_|klp_|whsec_|Bearer |Token )[A-Za-z0-9._~+/=-]{6,}")
NOT_SECRET_SUFFIXES = ("_id", "_ids", "_env", "_count")
REDACTED = "[redacted]"


def _secret_bearing(key: str) -> bool:
    """A log key that may hold a secret: named after one, unless it names an id, a variable or a count
    (``api_key_id``, ``token_ids``, ``api_key_env``, ``token_count``)."""
    k = key.lower()
    return not k.endswith(NOT_SECRET_SUFFIXES) and any(part in k for part in SECRET_KEY_PARTS)


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return SECRET_VALUE.sub(lambda m: m.group(1) + REDACTED, value)
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_bearing(str(k)) else _scrub(v) for k, v in value.items()}
    return value


def redact_secrets(_logger: object, _method: str, event_dict: dict) -> dict:
    """structlog processor, defence in depth: values under secret-bearing keys become ``[redacted]``, and
    our token/secret formats (``kla_…``, ``klp_…``, ``whsec_…``, bearer headers) are masked in any string.
    Callers must still never log a secret; this catches the mistake."""
    return {k: REDACTED if _secret_bearing(k) else _scrub(v) for k, v in event_dict.items()}


@functools.cache
def _named_print_logger() -> type:
    import structlog

    class _NamedPrintLogger(structlog.PrintLogger):
        """A PrintLogger that knows the name it was created with (``structlog.get_logger(__name__)``)."""

        def __init__(self, file, name: str) -> None:
            super().__init__(file)
            self.name = name

    return _NamedPrintLogger


def _logger_factory(*args: object) -> object:
    return _named_print_logger()(sys.stderr, str(args[0]) if args else "keyledger")


def configure_logging(level: int = logging.WARNING, environ: Mapping[str, str] | None = None) -> None:
    """Logs go to stderr (stdout is for data, e.g. ``--json``); below WARNING only when asked with
    ``KEYLEDGER_LOG_LEVEL`` (e.g. ``info``). ``KEYLEDGER_LOG_FORMAT=json`` writes one JSON object per line
    (timestamp, level, event, logger, bound context such as ``request_id``), also for the standard
    library's loggers (the API's 500s, uvicorn); the default is the human console format. Secret-bearing
    keys are redacted either way (:func:`redact_secrets`)."""
    import structlog

    env = os.environ if environ is None else environ
    name = env.get("KEYLEDGER_LOG_LEVEL", "").upper()
    level = getattr(logging, name, level) if name else level
    as_json = env.get("KEYLEDGER_LOG_FORMAT", "console").strip().lower() == "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer = (structlog.processors.JSONRenderer(sort_keys=False) if as_json
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    renderer],
        logger_factory=_logger_factory,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


def register_demo(app: typer.Typer) -> None:
    """``keyledger demo``, with this module's wiring (the demo builds its own runtimes and server app)."""
    from keyledger.demo.cli import register

    register(app, make_runtime, create_server_app)


# Every `keyledger` command, in `keyledger --help` order: (name, "module:attribute", first paragraph of its
# help). The module is imported only when the command runs (`keyledger.cli.main.Lazy`); the help text is
# what `keyledger --help` shows without importing it (tests/cli/test_lazy_commands.py keeps it equal to the
# command's own). The attribute is a Typer sub-app, or a `register(app)` that mounts the command.
COMMANDS: tuple[Lazy, ...] = (
    # usage/ (`usage price-check` runs `price-check`)
    Lazy("usage", "keyledger.usage.cli:register",
         "A customer's usage from the ledger's daily rollups. "
         "(`keyledger usage price-check --period YYYY-MM`\n"
         "prices the ledger with keyledger's copy of Deepgram's price list.)"),
    Lazy("reconcile", "keyledger.usage.cli:register",
         "Compare what the ledger attributed with Deepgram's billing breakdown, to the cent."),
    Lazy("price-check", "keyledger.usage.cli:register",
         "Price each ledger record with keyledger's copy of Deepgram's price list; flag disagreement."),
    Lazy("init", "keyledger.cli.main:register_init",
         "Create keyledger.toml (with a fresh secret key) and the database. Safe to run again."),
    Lazy("demo", "keyledger.bootstrap:register_demo",
         "The whole product end to end against the bundled Deepgram emulator, on SQLite; then the\n"
         "dashboard on http://127.0.0.1:8000 until interrupted (Ctrl-C)."),
    # worker/: `sync` lives there, not in usage/, because it evaluates budgets after it commits
    Lazy("sync", "keyledger.worker.cli:register",
         "Pull usage from Deepgram's request log into the ledger, then evaluate budgets (safe to run\n"
         "concurrently and repeatedly)."),
    Lazy("worker", "keyledger.worker.cli:register",
         "Scheduled sync (then budgets), invoice runs at period close, webhook delivery. SIGTERM stops it\n"
         "cleanly."),
    # here: the CLI and the API are peers (neither imports the other)
    Lazy("serve", "keyledger.bootstrap:register_serve",
         "Serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json) and the web UI (/ and /portal)."),
    # customers/
    Lazy("connections", "keyledger.customers.cli:connections_app", "Deepgram projects keyledger works with."),
    Lazy("customers", "keyledger.customers.cli:customers_app", "The operator's customers."),
    Lazy("keys", "keyledger.customers.cli:keys_app", "Customers' Deepgram API keys."),
    Lazy("secrets", "keyledger.customers.cli:secrets_app", "The key that encrypts secrets at rest."),
    Lazy("admin-tokens", "keyledger.customers.tokens_cli:admin_tokens_app",
         "Tokens for keyledger's REST API (stored hashed, shown once)."),
    Lazy("tokens", "keyledger.customers.tokens_cli:tokens_app", "Short-lived Deepgram tokens for browsers."),
    # pricing/, invoices/, budgets/, notifications/
    Lazy("plans", "keyledger.pricing.cli:plans_app",
         "Pricing plans (YAML or TOML files), versioned by effective date."),
    Lazy("invoices", "keyledger.invoices.cli:invoices_app",
         "Invoices: draft -> finalized -> paid | void, credit notes."),
    Lazy("report", "keyledger.invoices.cli:report_app", "Reports over issued invoices."),
    Lazy("budgets", "keyledger.budgets.cli:budgets_app",
         "Per-customer spend caps (USD of Deepgram cost per period)."),
    Lazy("webhooks", "keyledger.notifications.cli:webhooks_app",
         "Outbound webhooks (Standard Webhooks signatures)."),
)


def _runtime() -> Runtime:
    from keyledger.core.config import load_settings

    return Runtime(settings=load_settings())


def main() -> None:
    from keyledger.cli.main import run

    # Logging is set up when a command is about to run (`keyledger --help` needs none of it).
    run(COMMANDS, _runtime, before=configure_logging)


if __name__ == "__main__":
    main()
