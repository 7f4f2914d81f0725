"""The ``keyledger`` CLI loads sub-commands lazily (``keyledger.cli.main.Lazy``, table in
``keyledger.bootstrap.COMMANDS``): ``keyledger --help`` lists every command without importing any feature,
``keyledger sync`` does not import invoices, pricing, the web UI or the API, and the help each entry
records is the command's own.

The CLI runs as a real subprocess (the console script's ``main``); a wrapper records ``sys.modules`` at
exit, so the assertions are about what the process really imported."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyledger.core.crypto import generate_key

# Every command `keyledger --help` has always listed, in its order (a command dropped from the table, or
# reordered, fails here).
EXPECTED_COMMANDS = [
    "usage", "reconcile", "price-check", "init", "demo", "sync", "worker", "serve", "connections",
    "customers", "keys", "secrets", "admin-tokens", "tokens", "plans", "invoices", "report", "budgets",
    "webhooks",
]

# What `keyledger --help` must not import: every feature, the database and HTTP stacks, documents, web.
NOT_FOR_HELP = (
    "keyledger.customers", "keyledger.usage", "keyledger.pricing", "keyledger.invoices", "keyledger.budgets",
    "keyledger.notifications", "keyledger.worker", "keyledger.demo", "keyledger.api", "keyledger.web",
    "keyledger.db", "keyledger.provider", "dgemu", "sqlalchemy", "alembic", "pydantic", "pydantic_settings",
    "structlog", "httpx", "cryptography", "jinja2", "xhtml2pdf", "reportlab", "fastapi", "starlette",
    "uvicorn", "yaml",
)

# What `keyledger sync` (a cron job, measured by bench/sync.py) must not import.
NOT_FOR_SYNC = (
    "keyledger.invoices", "keyledger.pricing", "keyledger.demo", "keyledger.api", "keyledger.web",
    "keyledger.worker.runner", "dgemu", "jinja2", "xhtml2pdf", "reportlab", "fastapi", "starlette", "uvicorn",
    "alembic",
)

_WRAPPER = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["KL_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["keyledger", *sys.argv[1:]]
from keyledger.bootstrap import main
main()
"""


def _run(args: list[str], tmp_path: Path, env_extra: dict[str, str] | None = None):
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update({"COLUMNS": "100", "KL_MODULES_OUT": str(out), **(env_extra or {})})
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    return proc, set(json.loads(out.read_text()))


def _imported(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_help_lists_every_command_without_importing_features(tmp_path):
    proc, modules = _run(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _imported(modules, NOT_FOR_HELP) == []
    listed = [line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 1 and line.split()[1] in EXPECTED_COMMANDS]
    assert listed == EXPECTED_COMMANDS
    # the one-line help is there too (the first words of a command group's and of a command's help)
    assert "Invoices: draft -> finalized -> paid | void" in proc.stdout
    assert "Pull usage from Deepgram's request log" in proc.stdout


def test_no_arguments_shows_the_help_and_a_typo_still_gets_a_suggestion(tmp_path):
    proc, modules = _run([], tmp_path)
    assert proc.returncode == 2
    assert "webhooks" in proc.stdout + proc.stderr
    assert _imported(modules, NOT_FOR_HELP) == []
    proc, _ = _run(["synk"], tmp_path)
    assert proc.returncode == 2
    assert "No such command 'synk'. Did you mean 'sync'?" in proc.stderr


def test_sync_imports_only_what_sync_needs(db_url, tmp_path):
    env = {"KEYLEDGER_DATABASE_URL": db_url, "KEYLEDGER_SECRET_KEY": generate_key(),
           "KEYLEDGER_CONFIG": str(tmp_path / "keyledger.toml")}
    proc, modules = _run(["sync", "--json"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"runs": []}
    assert "keyledger.worker.jobs" in modules and "keyledger.budgets.service" in modules
    assert _imported(modules, NOT_FOR_SYNC) == []


def test_a_user_mistake_in_a_lazy_command_is_one_line_and_exit_1(db_url, tmp_path):
    env = {"KEYLEDGER_DATABASE_URL": db_url, "KEYLEDGER_SECRET_KEY": generate_key(),
           "KEYLEDGER_CONFIG": str(tmp_path / "keyledger.toml")}
    proc, modules = _run(["sync", "--connection", "nope"], tmp_path, env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _imported(modules, NOT_FOR_SYNC) == []


def _first_paragraph(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0].strip()


@pytest.mark.parametrize("name", EXPECTED_COMMANDS)
def test_the_recorded_help_is_the_commands_own(name):
    """What `keyledger --help` shows without importing a command is what the command itself says."""
    from keyledger.bootstrap import COMMANDS
    from keyledger.cli.main import load

    entries = {e.name: e for e in COMMANDS}
    assert list(entries) == EXPECTED_COMMANDS
    command = load(entries[name])
    assert command.name == name
    assert _first_paragraph(command.short_help or command.help) == _first_paragraph(entries[name].help)
    assert not command.hidden and not command.deprecated
    assert not getattr(command, "rich_help_panel", None)
