"""The worker loop: run due jobs, sleep a little, repeat; stop cleanly on SIGTERM/SIGINT (the job in
progress finishes, its lease is released, then the process exits)."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from keyledger.worker.jobs import build_jobs
from keyledger.worker.scheduler import Scheduler

log = structlog.get_logger(__name__)


@dataclass
class Worker:
    rt: Any
    poll_seconds: float = 1.0  # float-ok: seconds
    stop: threading.Event = field(default_factory=threading.Event)
    scheduler: Scheduler | None = None

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.scheduler = Scheduler(self.rt.engine, self.rt.clock)

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame) -> None:
            log.info("worker.stopping", signal=signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def once(self) -> list[str]:
        """One cycle of every job (due or not, unless another worker holds it), then return."""
        return self.scheduler.cycle(build_jobs(self.rt), force=True, stop=self.stop)

    def run(self, *, max_cycles: int | None = None, max_seconds: float | None = None) -> int:  # float-ok
        """Cycles until stopped, or ``max_cycles`` ran, or ``max_seconds`` passed (the cycle in progress
        finishes); returns the number of cycles."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        cycles = 0
        while not self.stop.is_set():
            # Jobs are rebuilt each cycle so new connections are picked up without a restart.
            self.scheduler.cycle(build_jobs(self.rt), stop=self.stop)
            cycles += 1
            if max_cycles is not None and cycles >= max_cycles:
                break
            left = self.poll_seconds if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            self.stop.wait(min(self.poll_seconds, left))
        return cycles
