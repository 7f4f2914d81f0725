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
import re
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
from keyledger.db.engine import make_engine, normalize_url
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
        return make_engine(self.settings.database_url, **pool_options(self.settings))

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
            max_response_bytes=self.settings.provider_max_response_bytes,
            max_record_usd=self.settings.provider_max_record_usd,
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


def pool_options(settings: Settings) -> dict[str, int]:
    """The connection pool of each process (PostgreSQL only; SQLite keeps SQLAlchemy's defaults)."""
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


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was created with (``structlog.get_logger(__name__)``)."""

    def __init__(self, file, name: str) -> None:
        super().__init__(file)
        self.name = name


def _logger_factory(*args: object) -> _NamedPrintLogger:
    return _NamedPrintLogger(sys.stderr, str(args[0]) if args else "keyledger")


def configure_logging(level: int = logging.WARNING, environ: Mapping[str, str] | None = None) -> None:
    """Logs go to stderr (stdout is for data, e.g. ``--json``); below WARNING only when asked with
    ``KEYLEDGER_LOG_LEVEL`` (e.g. ``info``). ``KEYLEDGER_LOG_FORMAT=json`` writes one JSON object per line
    (timestamp, level, event, logger, bound context such as ``request_id``), also for the standard
    library's loggers (the API's 500s, uvicorn); the default is the human console format. Secret-bearing
    keys are redacted either way (:func:`redact_secrets`)."""
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
