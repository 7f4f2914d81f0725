"""Running ``keyledger`` as a subprocess for the usage scenarios, with a migrated database seeded by SQL
(connection, customers, keys) and the connection's key in an environment variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from keyledger.core.crypto import generate_key

KEY_ENV = "KL_TEST_DG_KEY"


@dataclass
class Env:
    db_url: str
    engine: Engine
    dgemu: object
    tmp: Path
    extra: dict = field(default_factory=dict)
    secret_key: str = field(default_factory=generate_key)

    def environ(self, **more: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
        env.update(
            {
                "KEYLEDGER_DATABASE_URL": self.db_url,
                "KEYLEDGER_CONFIG": str(self.tmp / "absent.toml"),
            "KEYLEDGER_SECRET_KEY": self.secret_key,  # as after `keyledger init`
                "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
                "KEYLEDGER_SYNC_LOOKBACK_SECONDS": "7200",
                "KEYLEDGER_SYNC_WINDOW_DAYS": "1",
                "KEYLEDGER_PROVIDER_MAX_RETRIES": "3",
                KEY_ENV: self.dgemu.owner_key,
                "COLUMNS": "200",
            }
        )
        env.update(self.extra)
        env.update(more)
        return env

    def popen(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "keyledger", *args],
            env=self.environ(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:  # float-ok
        return subprocess.run(
            [sys.executable, "-m", "keyledger", *args],
            env=self.environ(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str, **env: str):
        res = self.run(*args, "--json", **env)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
