"""Pausing Python's cyclic garbage collector around bulk work.

A bulk job (an invoice run for thousands of customers) allocates millions of short-lived objects —
rows, Decimals, lines — that reference counting frees at once. Each allocation burst still triggers
the cyclic collector, whose full passes walk every live object of the process (the run's per-customer
usage sums, the SQLAlchemy metadata, ...): in a 10k-customer run that was ~1–2.5 s of ~11 s
(``bench/invoice.py``). Inside :func:`paused_cyclic_gc` only cyclic garbage waits (collected when the
pause ends); memory that reference counting frees is freed as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_cyclic_gc() -> Iterator[None]:
    """Disable the cyclic collector for the block; re-enable it after only if it was enabled (so
    nested or concurrent pauses leave it enabled once the outermost one ends)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
