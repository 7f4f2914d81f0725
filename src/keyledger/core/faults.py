"""Fault points for crash tests. Inert unless ``KEYLEDGER_FAULT`` names the point.

``KEYLEDGER_FAULT=keys.after_provider_create`` makes the process kill itself (SIGKILL, no cleanup,
no commit) when it reaches that point, so tests can prove recovery from a crash at the worst moment.
Several points may be given, comma-separated. ``name:N`` kills at the N-th time the point is reached
in this process (``sync.after_page_fetch:3``); a bare name means the first time.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def _wanted(spec: str) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name:
            wanted[name] = int(count) if count.strip().isdigit() else 1
    return wanted


def fault_point(name: str) -> None:
    spec = os.environ.get("KEYLEDGER_FAULT")
    if not spec:
        return
    at = _wanted(spec).get(name)
    if at is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= at:
        os.kill(os.getpid(), signal.SIGKILL)
