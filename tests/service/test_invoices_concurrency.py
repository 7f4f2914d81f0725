"""Concurrent finalizers (threads, each with its own connection) never skip or repeat a number: the
counter row is incremented inside each finalize transaction. On PostgreSQL the counter's row lock
queues them; on SQLite ``BEGIN IMMEDIATE`` serializes writers."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from keyledger.core.errors import Conflict
from keyledger.invoices.service import InvoiceService
from tests.invoice_support import World

N = 30
THREADS = 8


def test_concurrent_finalizers_give_numbers_1_to_n(engine):
    w = World(engine)
    for i in range(N):
        c = w.customer(f"c{i:02d}")
        w.usage(c, datetime(2026, 1, 3, tzinfo=UTC), minutes=str(i + 1))
    ids = [e.invoice_id for e in w.service.run("2026-01").entries]
    # Every draft is attempted by two threads at once: exactly one may win.
    attempts = ids * 2
    random.Random(3).shuffle(attempts)
    start = threading.Barrier(THREADS)
    wins: list[tuple[str, str]] = []
    conflicts: list[str] = []
    lock = threading.Lock()

    def worker(chunk: list[str]) -> None:
        svc = InvoiceService(engine, w.clock)
        start.wait()
        for inv in chunk:
            try:
                number = svc.finalize(inv)["number"]
            except Conflict:
                with lock:
                    conflicts.append(inv)
                continue
            with lock:
                wins.append((inv, number))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, [attempts[i::THREADS] for i in range(THREADS)]))

    assert len(conflicts) == N and sorted(inv for inv, _ in wins) == sorted(ids)
    numbers = sorted(number for _, number in wins)
    assert numbers == [f"INV-2026-{i:06d}" for i in range(1, N + 1)]
    for inv, number in wins:
        assert w.service.get(inv)["number"] == number
    # The next finalize continues the sequence.
    c = w.customer("late")
    inv = w.service.run("2026-01", customer=c).entries[0].invoice_id
    assert w.service.finalize(inv)["number"] == f"INV-2026-{N + 1:06d}"
