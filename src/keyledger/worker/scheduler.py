"""Job scheduling with leases, so that several workers never run the same job at the same time.

A job row (``worker_jobs``) is claimed with a conditional UPDATE: free lease (none, expired, or held by a
process on this host that no longer exists) and due (``next_run_at <= now``, unless forced). Finishing
releases the lease and schedules the next run ``interval`` later. A worker killed with SIGKILL leaves a
lease that another worker on the same host takes over at once, and any worker once it expires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import Engine, or_, select, update

from keyledger.core.clock import Clock
from keyledger.core.ids import new_id
from keyledger.core.leases import dead_local_owner, local_owner
from keyledger.db.tables_notifications import worker_jobs

log = structlog.get_logger(__name__)
wj = worker_jobs.c


@dataclass
class Job:
    name: str
    interval: timedelta
    run: Callable[[], object]
    lease: timedelta = timedelta(minutes=15)


@dataclass
class Scheduler:
    engine: Engine
    clock: Clock
    owner: str = field(default_factory=lambda: local_owner(new_id("wrk")))

    def _insert(self, db):
        if db.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert

    def claim(self, job: Job, *, force: bool = False) -> bool:
        now = self.clock.now()
        with self.engine.begin() as db:
            db.execute(
                self._insert(db)(worker_jobs)
                .values(name=job.name, next_run_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            row = db.execute(select(wj.lease_owner).where(wj.name == job.name)).first()
            free = or_(wj.lease_until.is_(None), wj.lease_until <= now)
            if row is not None and dead_local_owner(row.lease_owner):
                free = or_(free, wj.lease_owner == row.lease_owner)
            conds = [wj.name == job.name, free]
            if not force:
                conds.append(wj.next_run_at <= now)
            taken = db.execute(
                update(worker_jobs)
                .where(*conds)
                .values(lease_owner=self.owner, lease_until=now + job.lease, last_started_at=now)
            ).rowcount
        return taken > 0

    def finish(self, job: Job, error: str | None) -> None:
        now = self.clock.now()
        with self.engine.begin() as db:
            db.execute(
                update(worker_jobs)
                .where(wj.name == job.name, wj.lease_owner == self.owner)
                .values(
                    lease_owner=None,
                    lease_until=None,
                    next_run_at=now + job.interval,
                    last_finished_at=now,
                    last_error=error,
                )
            )

    def run_job(self, job: Job, *, force: bool = False) -> bool:
        """Run the job if it can be claimed; True when it ran. Errors are logged and recorded, not raised."""
        if not self.claim(job, force=force):
            return False
        error = None
        try:
            job.run()
        except Exception as exc:  # noqa: BLE001 - a job's failure must not stop the worker
            error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("worker.job_failed", job=job.name, error=error)
        finally:
            self.finish(job, error)
        return True

    def cycle(
        self, jobs: list[Job], *, force: bool = False, stop: threading.Event | None = None
    ) -> list[str]:
        ran = []
        for job in jobs:
            if stop is not None and stop.is_set():
                break
            if self.run_job(job, force=force):
                ran.append(job.name)
        return ran
