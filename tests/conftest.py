"""Shared fixtures: real databases (SQLite and PostgreSQL) and a real dgemu over HTTP.

- ``db_url``/``engine``: parametrized over SQLite and PostgreSQL. PostgreSQL runs when
  ``KEYLEDGER_TEST_POSTGRES_URL`` is set (CI always sets it); each test session gets its own database,
  migrated once, and every table is emptied after each test.
- ``dgemu``: one emulator process per test session, started on a free port, reset before each test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from keyledger.db.engine import make_engine, normalize_url
from keyledger.db.metadata import metadata
from keyledger.db.migrate import upgrade

POSTGRES_URL = os.environ.get("KEYLEDGER_TEST_POSTGRES_URL")
DGEMU_PROJECT_ID = "c0ffee00-0000-4000-8000-000000000001"
DGEMU_OWNER_KEY = "dgemu_owner_" + "0" * 28


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- databases

@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("KEYLEDGER_TEST_POSTGRES_URL is not set (CI sets it; PostgreSQL tests run there)")
    name = f"kl_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(POSTGRES_URL).rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A migrated, empty database on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "keyledger.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("_postgres_database")
    yield url
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# --------------------------------------------------------------------------- dgemu

@dataclass
class Dgemu:
    base_url: str
    ws_url: str
    project_id: str
    owner_key: str
    process: subprocess.Popen

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {key or self.owner_key}"},
            timeout=30,
        )

    def reset(self) -> None:
        with self.client() as c:
            c.post("/_emulator/reset").raise_for_status()


def start_dgemu(extra_args: list[str] | None = None, env: dict | None = None) -> Dgemu:
    port = free_port()
    cmd = [
        sys.executable, "-m", "dgemu", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--project-id", DGEMU_PROJECT_ID, "--owner-key", DGEMU_OWNER_KEY, *(extra_args or []),
    ]
    log = tempfile.NamedTemporaryFile(prefix="dgemu-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = Path(log.name).read_text()
            raise RuntimeError(f"dgemu exited early: {out}")
        try:
            if httpx.get(f"{base}/_emulator/health", timeout=1).status_code == 200:
                return Dgemu(base, f"ws://127.0.0.1:{port}", DGEMU_PROJECT_ID, DGEMU_OWNER_KEY, proc)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("dgemu did not start within 30 s")


def stop_dgemu(server: Dgemu) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def _dgemu_session() -> Iterator[Dgemu]:
    server = start_dgemu()
    yield server
    stop_dgemu(server)


@pytest.fixture
def dgemu(_dgemu_session) -> Dgemu:
    """A running dgemu, reset to its initial state (one project, its owner key)."""
    _dgemu_session.reset()
    return _dgemu_session
