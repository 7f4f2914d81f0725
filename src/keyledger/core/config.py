"""Configuration: environment variables prefixed ``KEYLEDGER_`` over an optional ``keyledger.toml``.

The file is looked up at ``KEYLEDGER_CONFIG`` (default ``./keyledger.toml``); environment variables win.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyledger.core.errors import Invalid

DEFAULT_CONFIG_PATH = "keyledger.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYLEDGER_", extra="ignore")

    database_url: str = "sqlite:///keyledger.db"
    # Key(s) that encrypt secrets at rest; see keyledger.core.crypto. Never logged.
    secret_key: SecretStr | None = None
    config_path: str = Field(default=DEFAULT_CONFIG_PATH, validation_alias="KEYLEDGER_CONFIG")
    webhook_allow_private_networks: bool = False
    # Usage sync
    sync_lookback_seconds: int = 3 * 24 * 3600
    sync_settle_seconds: int = 120
    sync_window_days: int = 7
    sync_page_limit: int = 1000
    # Pages held in memory before a chunk is committed (bounds memory for any window size). Each commit
    # rewrites every index page its records touch (request ids are random), so bigger chunks write less:
    # on a 1M-record sync, 60 pages took 58-64 s against 69-80 s for 20 (bench/sync.py, same host); 50
    # keeps the peak well under 250 MB.
    sync_chunk_pages: int = Field(default=50, ge=1, le=1000)
    sync_lease_seconds: int = 300
    provider_timeout_seconds: float = 30.0  # float-ok: a timeout, not money
    provider_max_retries: int = 6
    # Hostile-provider bounds (docs/usage-ledger.md): a request costing more than this is refused (USD,
    # exact), and so is a response body larger than this many bytes.
    provider_max_record_usd: Decimal = Field(default=Decimal(10_000), gt=0, lt=10**17)
    provider_max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Price check (docs/usage-ledger.md): keyledger's copy of Deepgram's prices (a file of negotiated rates;
    # default: the list shipped in keyledger/provider/deepgram/prices.toml), the tier billed, and when a
    # record's usd disagrees: |usd - expected| > max(absolute_usd, relative * expected), exact decimals.
    provider_prices: str | None = None
    provider_price_tier: str = "pay-as-you-go"
    price_check_absolute_usd: str = "0.000001"
    price_check_relative: str = "0.01"
    # Operator identity, printed on invoices.
    operator_name: str = "Example Voice Co."
    operator_address: str = ""
    operator_logo_path: str | None = None
    # Invoices: numbers {invoice_prefix}-{YYYY}-{seq:06d}, credit notes {credit_note_prefix}-{YYYY}-{seq:06d}.
    invoice_prefix: str = "INV"
    credit_note_prefix: str = "CN"
    invoice_due_days: int = 30
    # Worker (keyledger worker): job intervals, and the grace after a period closes before its invoices run.
    worker_sync_interval_seconds: int = 300
    worker_budget_interval_seconds: int = 60
    worker_delivery_interval_seconds: int = 5
    worker_invoice_interval_seconds: int = 3600
    worker_invoice_grace_seconds: int = 2 * 24 * 3600
    worker_invoice_finalize: bool = True
    # Operations (docs/operations.md): the bearer token Prometheus sends to /metrics (admin tokens work too),
    # and the PostgreSQL connection pool of each process.
    metrics_token: SecretStr | None = None
    db_pool_size: int = 5
    db_max_overflow: int = 10
    db_pool_recycle_seconds: int = 1800


def load_settings(**overrides: Any) -> Settings:
    """Settings from the config file (if present) overlaid by the environment and explicit overrides."""
    path = Path(overrides.get("config_path") or os.environ.get("KEYLEDGER_CONFIG", DEFAULT_CONFIG_PATH))
    file_values: dict[str, Any] = {}
    if path.is_file():
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise Invalid(f"{path}: not valid TOML ({exc})") from None
        file_values = file_values.get("keyledger", file_values)
    env_names = {k[len("KEYLEDGER_"):].lower() for k in os.environ if k.startswith("KEYLEDGER_")}
    init = {k: v for k, v in file_values.items() if k not in env_names}
    init.update({k: v for k, v in overrides.items() if v is not None})
    init["config_path"] = str(path)
    try:
        return Settings(**init)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise Invalid(f"configuration {field}: {first['msg']}") from None
