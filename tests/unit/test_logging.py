"""Structured logs (bootstrap.configure_logging): ``KEYLEDGER_LOG_FORMAT=json`` writes one JSON object per
line for structlog and standard-library loggers alike; secret-bearing keys and our token formats are
redacted whatever the format; a real CLI run with JSON logs writes nothing but JSON lines to stderr."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from keyledger.bootstrap import configure_logging
from keyledger.core.crypto import generate_key
from tests.scenario.conftest import kl_run
from tests.usage_support import add_connection

DG_SECRET = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_json_lines_carry_timestamp_level_event_logger_and_bound_context(capsys, restore_logging):
    configure_logging(environ={"KEYLEDGER_LOG_FORMAT": "json", "KEYLEDGER_LOG_LEVEL": "info"})
    log = structlog.get_logger("keyledger.usage.service")
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        log.info("sync.failed", connection_id="con_1", customer_id="cus_1")
    log.debug("below the level")
    logging.getLogger("keyledger.api").error("api.unexpected_error %s %s", "GET", "/api/v1/customers")
    first, second = json_lines(capsys.readouterr().err)
    assert first["event"] == "sync.failed" and first["level"] == "info"
    assert first["logger"] == "keyledger.usage.service" and first["timestamp"].endswith("Z")
    assert (first["request_id"], first["connection_id"], first["customer_id"]) == ("req-1", "con_1", "cus_1")
    assert second == {**second, "event": "api.unexpected_error GET /api/v1/customers", "level": "error",
                      "logger": "keyledger.api"}


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secret_bearing_keys_and_token_formats_are_redacted(capsys, restore_logging, fmt):
    configure_logging(environ={"KEYLEDGER_LOG_FORMAT": fmt})
    log = structlog.get_logger("keyledger.test")
    log.warning("oops", api_key=DG_SECRET, secret="whsec_c2VjcmV0c2VjcmV0", token="kla_abcdefghijklmnop",
                headers={"Authorization": f"Token {DG_SECRET}", "accept": "json"},
                detail="retried with Bearer klp_zyxwvutsrqponm", api_key_id="acc-1", token_id="adm_1",
                api_key_env="DG_KEY")
    logging.getLogger("keyledger.api").warning("sent whsec_abcdefghijkl to a receiver")
    err = capsys.readouterr().err
    for secret in (DG_SECRET, "c2VjcmV0c2VjcmV0", "abcdefghijklmnop", "zyxwvutsrqponm", "abcdefghijkl"):
        assert secret not in err
    assert "acc-1" in err and "adm_1" in err and "DG_KEY" in err  # ids and variable names are not secrets
    if fmt == "json":
        event, stdlib = json_lines(err)
        assert event["api_key"] == event["secret"] == event["token"] == "[redacted]"
        assert event["headers"] == {"Authorization": "[redacted]", "accept": "json"}
        assert event["detail"] == "retried with Bearer [redacted]"
        assert stdlib["event"] == "sent whsec_[redacted] to a receiver"
    else:
        assert "[redacted]" in err and not err.lstrip().startswith("{")


def test_a_cli_run_with_json_logs_writes_only_json_to_stderr(db_url, engine, tmp_path):
    # A connection whose Deepgram is unreachable: the worker's sync job fails and logs it (a warning).
    add_connection(engine, base_url="http://127.0.0.1:9", api_key_env="DG_KEY")
    env = {"PATH": "/usr/bin:/bin", "KEYLEDGER_DATABASE_URL": db_url, "KEYLEDGER_SECRET_KEY": generate_key(),
           "KEYLEDGER_CONFIG": str(tmp_path / "none.toml"), "KEYLEDGER_LOG_FORMAT": "json",
           "KEYLEDGER_LOG_LEVEL": "info", "KEYLEDGER_PROVIDER_MAX_RETRIES": "0", "DG_KEY": DG_SECRET}
    res = kl_run("worker", "--once", env=env, cwd=tmp_path)
    assert DG_SECRET not in res.stderr + res.stdout
    lines = json_lines(res.stderr)
    failed = [e for e in lines if e["event"] == "worker.job_failed"]
    assert failed and failed[0]["level"] == "warning" and failed[0]["logger"] == "keyledger.worker.scheduler"
    assert all({"timestamp", "level", "event", "logger"} <= set(e) for e in lines)
