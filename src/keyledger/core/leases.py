"""Lease owners: ``host|pid|tag`` strings, and whether one belongs to a dead process on this host.

A lease held by a process that no longer exists on this host can be taken over at once; any other
lease only once it expires.
"""

from __future__ import annotations

import os
import socket


def local_owner(tag: str) -> str:
    """The lease owner string for this process: ``host|pid|tag``."""
    return f"{socket.gethostname()}|{os.getpid()}|{tag}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_owner(owner: str | None) -> bool:
    """True when a lease owner (``host|pid|…``) is a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition("|")
    pid = rest.partition("|")[0]
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))
