"""Scenario fixtures: the real ``keyledger`` CLI as a subprocess.

- ``kl_env``: a temporary working directory and an environment for the CLI — ``KEYLEDGER_DATABASE_URL``
  (the ``db_url`` fixture: SQLite and PostgreSQL, already migrated), ``KEYLEDGER_SECRET_KEY`` (fresh),
  ``KEYLEDGER_CONFIG`` (``<dir>/keyledger.toml``, not created), no other ``KEYLEDGER_*`` variables.
- ``run_cli(*args, env=None, cwd=None, timeout=120)``: runs ``python -m keyledger *args`` and returns
  the ``CompletedProcess`` (text ``stdout``/``stderr``, ``returncode``); env/cwd default to ``kl_env``'s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyledger.core.crypto import generate_key


@dataclass
class KLEnv:
    path: Path  # working directory
    env: dict[str, str]

    @property
    def config_path(self) -> Path:
        return Path(self.env["KEYLEDGER_CONFIG"])

    def with_(self, **changes: str | None) -> dict[str, str]:
        """A copy of the environment with variables set (or removed, with None)."""
        env = dict(self.env)
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env


def kl_run(
    *args: str, env: dict[str, str], cwd: Path | str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keyledger", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def kl_env(db_url, tmp_path) -> KLEnv:
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update(
        {
            "KEYLEDGER_DATABASE_URL": db_url,
            "KEYLEDGER_SECRET_KEY": generate_key(),
            "KEYLEDGER_CONFIG": str(work / "keyledger.toml"),
            "COLUMNS": "200",
        }
    )
    return KLEnv(path=work, env=env)


@pytest.fixture
def run_cli(kl_env) -> Callable[..., subprocess.CompletedProcess]:
    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None, timeout: float = 120
    ):
        return kl_run(
            *args, env=env if env is not None else kl_env.env, cwd=cwd or kl_env.path, timeout=timeout
        )

    return run
