"""What the benchmarks share: a free port, a dgemu process of their own, and one JSON object per line.

The scripts run as ``python bench/<name>.py``, so this module is imported as ``_common``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx


def emit(
    bench: str,
    metric: str,
    value: float,  # float-ok: timings
    unit: str,
    baseline: float | None = None,  # float-ok: timings
    ratio: float | None = None,  # float-ok: timings
    *,
    digits: int = 4,
    **extra,
) -> None:
    """Print ``{"bench", "metric", "value", "unit", "baseline", "ratio", **extra}`` as one line of JSON;
    ``ratio`` defaults to value / baseline."""
    if ratio is None and baseline:
        ratio = value / baseline
    line = {
        "bench": bench,
        "metric": metric,
        "value": round(value, digits),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, digits),
        "ratio": None if ratio is None else round(ratio, digits),
        **extra,
    }
    print(json.dumps(line), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dgemu(
    project_id: str, owner_key: str, log: Path, *, mode: str = "w"
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m dgemu serve`` on a free port (output into ``log``) and wait up to 30 s until it
    answers its health check; returns the process and its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "dgemu", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--project-id", project_id, "--owner-key", owner_key]
    out: IO = log.open(mode)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dgemu exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/_emulator/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("dgemu did not start within 30 s")
