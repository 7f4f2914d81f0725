"""Helpers of the security suite: a database snapshot (to prove a refused request changed nothing), a
loopback listener that counts connections, and an HTTP transport that never connects (it records)."""

from __future__ import annotations

import socket
import threading

import httpx
from sqlalchemy import Engine, select

from keyledger.db import tables  # noqa: F401 - every table in the metadata
from keyledger.db.metadata import metadata

# Columns that reading (not changing) may touch: the time a token was last used.
VOLATILE = {("admin_tokens", "last_used_at")}
# Written by the first use of the secret key (the key-check canary), not by what a request asked for.
FIRST_USE = {"secret_key_check"}


def db_snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, as sorted tuples of text (volatile columns left out)."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as db:
        for t in metadata.sorted_tables:
            if t.name in FIRST_USE:
                continue
            cols = [c for c in t.columns if (t.name, c.name) not in VOLATILE]
            rows = db.execute(select(*cols)).all()
            out[t.name] = sorted(tuple(repr(v) for v in r) for r in rows)
    return out


def snapshot_diff(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """Tables whose rows changed: {table: (rows before, rows after)} (empty when nothing changed)."""
    return {t: (len(before[t]), len(after[t])) for t in before if before[t] != after[t]}


class Listener:
    """A TCP listener on 127.0.0.1 that accepts and counts connections (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self._stop:
                self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self.sock.close()


class NoConnectTransport(httpx.BaseTransport):
    """Refuses every request without connecting, and records it: a safety net so a guard that fails can
    never reach a non-loopback address from a test."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        raise httpx.ConnectError("tests never connect", request=request)
