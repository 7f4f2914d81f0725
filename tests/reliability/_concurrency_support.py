"""Support for the multi-process concurrency checks: a counting HTTP proxy in front of dgemu (so a test
sees every management call keyledger makes, e.g. each key DELETE, even the idempotent repeats dgemu
would answer without a trace), a fleet of ``keyledger`` processes over one database, and the oracle
comparisons (ledger == dgemu's request log, rollups == recomputation, each event delivered once)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import select

from keyledger.db.tables_usage import sync_runs, sync_state
from tests.usage_support import dgemu_requests, ledger_rows, recomputed_rollups, rollups

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class CountingProxy:
    """A reverse proxy on 127.0.0.1 in a thread: forwards every request to ``upstream`` and records
    ``(method, path)`` of each. Point a connection's base URL at ``url``."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        client = httpx.Client(base_url=upstream, timeout=60)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer._lock:
                    outer.calls.append((self.command, self.path.split("?", 1)[0]))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                r = client.request(self.command, self.path, content=body, headers=headers)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in _HOP_HEADERS:
                        self.send_header(k, v)
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _forward  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self._client = client
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, method: str, path_suffix: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.calls if m == method and p.endswith(path_suffix))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


@dataclass
class Fleet:
    """``keyledger`` processes started together over one database; each one's output is kept."""

    env: dict[str, str]
    cwd: Path
    procs: list[tuple[tuple[str, ...], subprocess.Popen]] = field(default_factory=list)

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-m", "keyledger", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append((args, p))
        return p

    def wait(self, timeout: float = 150) -> list[tuple[tuple[str, ...], int, str, str]]:  # float-ok: seconds
        """Wait for every process; returns ``(args, returncode, stdout, stderr)`` each (kills stragglers)."""
        deadline = time.monotonic() + timeout
        out = []
        for args, p in self.procs:
            try:
                stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, stderr = p.communicate()
                stderr += "\n[killed: did not finish in time]"
            out.append((args, p.returncode, stdout, stderr))
        self.procs.clear()
        return out


def cli_env(db_url: str, secret_key: str, tmp: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env.update(
        {
            "KEYLEDGER_DATABASE_URL": db_url,
            "KEYLEDGER_SECRET_KEY": secret_key,
            "KEYLEDGER_CONFIG": str(tmp / "absent.toml"),
            "KEYLEDGER_PROVIDER_MAX_RETRIES": "3",
            "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "COLUMNS": "200",
        }
    )
    env.update(more)
    return env


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def assert_all_ok(results) -> None:
    bad = [(args, rc, err[-2000:]) for args, rc, _, err in results if rc != 0]
    assert not bad, bad


def assert_ledger_is_dgemu(engine, dgemu, project_key: dict[str, tuple[str, str]]) -> int:
    """For each connection id -> (project id, owner key): the ledger holds exactly dgemu's records (same
    ids, keys, instants, USD), none twice; the rollups equal a recomputation. Returns the record count."""
    total = 0
    for cid, (pid, key) in project_key.items():
        theirs = {
            r["request_id"]: (r["api_key_id"], r["response"]["details"]["usd"])
            for r in dgemu_requests(dgemu, project_id=pid, key=key)
        }
        rows = ledger_rows(engine, cid)
        ids = Counter(r["request_id"] for r in rows)
        assert [i for i, n in ids.items() if n > 1] == [], "a record is in the ledger twice"
        ours = {r["request_id"]: (r["api_key_id"], r["cost_usd"]) for r in rows}
        assert set(ours) == set(theirs), (
            f"{cid}: missing {len(set(theirs) - set(ours))}, extra {len(set(ours) - set(theirs))}"
        )
        assert ours == theirs
        total += len(rows)
    assert rollups(engine) == recomputed_rollups(engine)
    return total


def assert_sync_state_sane(engine, started: datetime, ended: datetime) -> None:
    """Every watermark lies within the run (each connection was synced during it, with no settle time),
    no lease is left behind, no run is left ``running``."""
    with engine.connect() as db:
        states = db.execute(select(sync_state)).mappings().all()
        runs = db.execute(select(sync_runs.c.status)).scalars().all()
    assert states, "no sync ever ran"
    for s in states:
        assert s["lease_owner"] is None, s
        assert started - timedelta(seconds=5) <= s["watermark"] <= ended, s
    assert "running" not in runs and "succeeded" in runs, Counter(runs)
