"""The seeded fault scenario: a seed becomes a reproducible plan of operations against a real dgemu and a
real database, one or two of them run as the real ``keyledger`` CLI in a subprocess that kills itself
(``KEYLEDGER_FAULT``, SIGKILL) at a point the seed chose, then re-run to completion; dgemu fault storms
(5xx, 429 with Retry-After, latency, late records) are switched on and off by the plan.

Everything else runs in-process through the same services the CLI calls (fast). ``Scenario.log`` is the
operation log: the same seed gives the same log (ids that dgemu or keyledger generate never appear in it).
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from keyledger.bootstrap import Runtime
from keyledger.budgets.service import BudgetService
from keyledger.core.config import Settings
from keyledger.core.crypto import generate_key
from keyledger.core.errors import ProviderError
from keyledger.customers.service import ConnectionService, CustomerService, KeyService
from keyledger.db.tables_customers import customers, keys
from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_usage import sync_runs
from keyledger.invoices.service import InvoiceService
from keyledger.notifications.service import WebhookService
from keyledger.pricing.service import import_plan_text
from keyledger.worker.jobs import deliver_due, sync_service, sync_then_budgets
from tests.invoice_support import FLAT
from tests.scenario.conftest import kl_run
from tests.service.test_invoice_content_hash import MUTABLE
from tests.usage_support import faults, inject

PAGE = 20  # records per page: a sync of a few hundred records fetches many pages
CHUNK_PAGES = 20  # pages per sync chunk: a sync of a few hundred records commits chunks before a window ends
RETRIES = 12  # provider retries, in-process and in the CLI: a storm is weathered, never fatal
CUSTOMERS = ("acme", "beta")  # acme has a revoke budget; beta has a plan and is invoiced
BUDGET_LIMIT = Decimal("1.00")
RERUNS = 20  # runs of an operation failed by a storm before the scenario gives up
UNRETRIED = "(gave up after 1 attempts)"  # a call keyledger never retries (creating a key) met a fault
MOVING_BATCHES = 8  # batches of 5 records injected while a slowed-down sync pages through

# Kill points per CLI operation; ``{n}`` (1-6) and ``{m}`` (1-2) are filled from the seed: the n-th time
# the point is reached.
KILL_POINTS: dict[str, list[str]] = {
    "sync": [
        "sync.after_lease",
        "sync.after_page_fetch:{n}",
        "sync.after_chunk_commit:1",
        "sync.before_commit:1",
        "sync.after_commit:1",
        "sync.before_finish",
        "budgets.after_evaluate",
        "budgets.after_revoke_key",
        "webhooks.after_send:{m}",
    ],
    "rotate": ["keys.after_provider_create", "keys.rotate_after_create"],
    "budgets": ["budgets.after_evaluate", "budgets.after_revoke_key", "keys.revoke_after_delete"],
    "deliver": ["webhooks.after_send:{m}"],
    # the finalize transaction (number, frozen lines, invoice.finalized event) dies before its commit
    "invoice": ["outbox.enqueue.invoice.finalized"],
}

ALL_POINTS = [(op, point) for op, points in KILL_POINTS.items() for point in points]


def replay_command(seed: int, db: str) -> str:
    return f"KEYLEDGER_SEED={seed} .venv/bin/pytest tests/reliability/test_fault_seeds.py -k {db}"


# ----------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Op:
    name: str  # traffic | sync | pull | rotate | budgets | deliver | invoice | storm | calm | moving
    args: tuple = ()
    kill: str | None = None  # a KEYLEDGER_FAULT spec: this op runs as a CLI subprocess that is killed

    def __str__(self) -> str:
        text = " ".join([self.name, *(str(a) for a in self.args)])
        return f"{text} [kill -9 at {self.kill}]" if self.kill else text


def plan(seed: int) -> list[Op]:
    """The operations of a seed: traffic, syncs, rotations, budget checks, deliveries, an invoice run with
    finalize, storms; 1-2 CLI operations are killed at a seeded point. Pure: the same seed, the same plan."""
    rnd = random.Random(seed)
    ops: list[Op] = []
    for _ in range(rnd.randint(5, 8)):
        kind = rnd.choice(
            ["traffic", "traffic", "sync", "rotate", "budgets", "deliver", "invoice", "storm", "moving"]
        )
        if kind == "traffic":
            ops.append(Op("traffic", (rnd.choice(CUSTOMERS), rnd.randint(20, 120), rnd.randint(10, 200))))
        elif kind == "rotate":
            ops.append(Op("rotate", (rnd.choice(CUSTOMERS),)))
        elif kind == "storm":
            ops.append(
                Op(
                    "storm",
                    (
                        rnd.choice(["0", "0.1", "0.2"]),  # error_rate (5xx)
                        rnd.choice(["0", "0.1", "0.25"]),  # rate_limit_rate (429)
                        rnd.choice([0, 0, 1]),  # Retry-After seconds
                        rnd.choice([0, 5, 20]),  # latency ms
                        rnd.choice([0, 0, 1, 2]),  # late records: visible this many seconds after created
                    ),
                )
            )
            if rnd.random() < 0.5:
                ops.append(Op("calm"))
        else:
            ops.append(Op(kind))
    # acme goes over its revoke budget in every seed (first when the seed kills a budget enforcement)
    over = Op("traffic", ("acme", 60, 300))
    # the first kill: the seed's (operation, point) in turn, so any 16 consecutive seeds reach every point;
    # the operation is added when the plan has none (a rotation of beta, who is never suspended)
    kind, point = ALL_POINTS[seed % len(ALL_POINTS)]
    if kind not in {op.name for op in ops}:
        ops.insert(rnd.randint(0, len(ops)), Op(kind, ("beta",) if kind == "rotate" else ()))
    first = rnd.choice([i for i, op in enumerate(ops) if op.name == kind])
    ops[first] = Op(kind, ops[first].args, point.format(n=rnd.randint(1, 6), m=rnd.randint(1, 2)))
    # a second kill in a third of the seeds, anywhere
    others = [i for i, op in enumerate(ops) if op.name in KILL_POINTS and i != first]
    if others and rnd.random() < 1 / 3:
        i = rnd.choice(others)
        again = rnd.choice(KILL_POINTS[ops[i].name]).format(n=rnd.randint(1, 6), m=rnd.randint(1, 2))
        ops[i] = Op(ops[i].name, ops[i].args, again)
    if point.startswith(("budgets.after_revoke_key", "keys.revoke")):
        # the killed operation is the one that enforces: acme's usage arrives just before it (pulled into
        # the ledger by a sync that evaluates no budget when the operation is a budget check)
        ops[first:first] = [over, Op("pull")] if kind == "budgets" else [over]
    else:
        if point.startswith("sync.after_chunk_commit"):
            ops.insert(first, Op("traffic", ("beta", 450, 100)))  # a window of more than one chunk
        ops.insert(rnd.randint(0, len(ops)), over)
    return ops


# ----------------------------------------------------------------------------------------- the world


@dataclass
class Stats:
    kills: int = 0  # processes that died by SIGKILL at their fault point
    points: list[str] = field(default_factory=list)  # the points they died at (without ``:N``)
    kills_not_reached: int = 0  # the point was not on this operation's path: it completed
    refused_by_storm: int = 0  # runs failed by a fault on a call never retried (run again)
    resends_same_id: int = 0  # a delivery re-sent under its own webhook-id after a kill


@dataclass
class Scenario:
    seed: int
    db_url: str
    dgemu: Any
    receiver: Any
    tmp: Path
    log: list[str] = field(default_factory=list)
    timings: list = field(default_factory=list)  # seconds per operation (not part of the log)
    stats: Stats = field(default_factory=Stats)
    secret_key: str = field(default_factory=generate_key)

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed * 7919 + 1)  # traffic details; the plan has its own stream
        self.start = datetime.now(UTC)
        month = self.start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self.since = max(month, self.start - timedelta(hours=2))
        self.period = self.start.strftime("%Y-%m")
        self.late_seconds = 0
        self.latency = 0
        self.injected = 0
        self.rt = Runtime(
            settings=Settings(
                database_url=self.db_url,
                secret_key=self.secret_key,
                provider_max_retries=RETRIES,
                sync_settle_seconds=0,
                sync_page_limit=PAGE,
                sync_chunk_pages=CHUNK_PAGES,
                webhook_allow_private_networks=True,
            ),
            environ={"DEEPGRAM_API_KEY": self.dgemu.owner_key},
        )
        self.finalized: dict[str, str] = {}  # invoice id -> content hash at finalization

    @property
    def engine(self):
        return self.rt.engine

    def close(self) -> None:
        faults(self.dgemu, error_rate=0, rate_limit_rate=0, retry_after_seconds=0, latency_ms=0,
               late_record_seconds=0)
        self.rt.engine.dispose()

    # ------------------------------------------------------------------ setup and the operations

    def setup(self) -> None:
        rt = self.rt
        import_plan_text(rt.engine, FLAT, name="flat.yaml", clock=rt.clock)
        ConnectionService(rt, environ=rt.environ).add(
            "main", project_id=self.dgemu.project_id, base_url=self.dgemu.base_url
        )
        self.endpoint = WebhookService(rt.engine, rt.cipher, rt.clock).add(self.receiver.url)
        svc = CustomerService(rt)
        for ext in CUSTOMERS:
            svc.add(ext.title(), external_id=ext, plan="flat")
            KeyService(rt).create(ext)
        BudgetService(rt).set("acme", limit=str(BUDGET_LIMIT), action="revoke")

    def run(self, ops: list[Op]) -> None:
        self.setup()
        for op in ops:
            began = time.monotonic()
            self.log.append(f"{op} -> {self.apply(op)}")
            self.timings.append(round(time.monotonic() - began, 2))

    def apply(self, op: Op) -> str:
        if op.name == "traffic":
            return self.traffic(*op.args)
        if op.name == "storm":
            err, rl, retry_after, latency, late = op.args
            faults(self.dgemu, error_rate=float(err), rate_limit_rate=float(rl),  # float-ok: dgemu rates
                   retry_after_seconds=retry_after, latency_ms=latency, late_record_seconds=late,
                   seed=self.seed)  # dgemu's fault decisions replay too
            self.late_seconds = max(self.late_seconds, late)
            self.latency = latency
            return "on"
        if op.name == "calm":
            faults(self.dgemu, error_rate=0, rate_limit_rate=0, retry_after_seconds=0, latency_ms=0,
                   late_record_seconds=0)
            self.latency = 0
            return "off"
        if op.name == "invoice" and not op.kill:
            return self.invoice()
        if op.name == "moving":
            return self.moving_pages()
        if op.name == "rotate" and self.active_key(op.args[0]) is None:
            return "skipped (customer suspended)"
        if op.kill:
            return self.killed(op)
        return self.in_process(op)

    def traffic(self, ext: str, n: int, minutes: int) -> str:
        """``n`` nova-3 records of ``minutes`` in all (seconds split at random) on the customer's live key
        (their last key when suspended: a revoked key's late usage stays attributed)."""
        key = self.active_key(ext) or self.last_key(ext)
        now = datetime.now(UTC)
        lo = max(self.since + timedelta(seconds=1), now - timedelta(minutes=90))
        span = (now - timedelta(seconds=5) - lo).total_seconds()  # float-ok: seconds
        items = []
        for i in range(n):
            created = lo + timedelta(seconds=self.rnd.uniform(0, span))  # float-ok: seconds
            items.append(
                {
                    "api_key_id": key,
                    "endpoint": "listen",
                    "method": self.rnd.choice(["sync", "streaming"]),
                    "model": "nova-3",
                    "created": (created + timedelta(microseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "duration_seconds": minutes * 60 // n,
                }
            )
        self.injected += inject(self.dgemu, items)
        return f"{n} records"

    def in_process(self, op: Op) -> str:
        """The operation through the services; a call keyledger never retries (creating a key is not
        idempotent) that met an injected fault fails the operation, which is then simply run again."""
        target = self.active_key(op.args[0]) if op.name == "rotate" else None
        for _ in range(RERUNS):
            try:
                return self.service_call(op, target)
            except ProviderError as exc:
                if UNRETRIED not in str(exc):
                    raise
                self.stats.refused_by_storm += 1
        raise AssertionError(f"{op}: still failing after {RERUNS} runs")

    def service_call(self, op: Op, target: str | None) -> str:
        rt = self.rt
        if op.name == "sync":
            out = sync_then_budgets(rt, since=self.since)
            if out.error is not None:
                raise out.error
            return "ok"
        if op.name == "rotate":
            KeyService(rt).rotate(target)
            return "ok"
        if op.name == "budgets":
            BudgetService(rt).evaluate_all()
            return "ok"
        if op.name == "pull":  # the usage sync alone, no budget evaluation
            sync_service(rt).sync(since=self.since)
            return "ok"
        if op.name == "deliver":
            deliver_due(rt)
            return "ok"
        raise AssertionError(op)

    def cli_args(self, op: Op) -> list[str]:
        if op.name == "sync":
            return ["sync", "--since", self.since.isoformat(), "--json"]
        if op.name == "rotate":
            return ["keys", "rotate", self.active_key(op.args[0]), "--json"]
        if op.name == "budgets":
            return ["budgets", "check"]
        if op.name == "invoice":
            return ["invoices", "run", "--period", self.period, "--customer", "beta", "--finalize"]
        return ["webhooks", "deliver"]

    def cli(self, args: list[str], fault: str | None = None):
        env = self.cli_env()
        if fault:
            env["KEYLEDGER_FAULT"] = fault
        return kl_run(*args, env=env, cwd=self.tmp, timeout=240)

    def cli_env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "KEYLEDGER_DATABASE_URL": self.db_url,
            "KEYLEDGER_SECRET_KEY": self.secret_key,
            "KEYLEDGER_CONFIG": str(self.tmp / "absent.toml"),
            "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
            "KEYLEDGER_SYNC_PAGE_LIMIT": str(PAGE),
            "KEYLEDGER_SYNC_CHUNK_PAGES": str(CHUNK_PAGES),
            "KEYLEDGER_PROVIDER_MAX_RETRIES": str(RETRIES),
            "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "DEEPGRAM_API_KEY": self.dgemu.owner_key,
            "COLUMNS": "200",
        }

    def killed(self, op: Op) -> str:
        """The operation as the CLI, killed at its point; then the same command again, to completion."""
        args = self.cli_args(op)  # a rotation resumes by rotating the same (old) key again
        for _ in range(RERUNS):  # a run failed by the storm before the point is run again, point armed
            first = self.cli(args, op.kill)
            if not self.refused_by_storm(first):
                break
        if first.returncode == -signal.SIGKILL:
            self.stats.kills += 1
            self.stats.points.append(op.kill.partition(":")[0])
            outcome = "killed"
            if op.kill.startswith("webhooks.after_send"):
                self.stats.resends_same_id += 1  # sent, killed before it was recorded: sent again
        else:
            assert first.returncode == 0, f"{op}: exit {first.returncode}: {first.stderr[-2000:]}"
            self.stats.kills_not_reached += 1
            outcome = "point not reached"
        for _ in range(RERUNS):
            again = self.cli(args)
            if not self.refused_by_storm(again):
                break
        assert again.returncode == 0, f"{op} (resumed): exit {again.returncode}: {again.stderr[-2000:]}"
        if op.name == "invoice":
            self.remember_finalized()
        return f"{outcome}, resumed ok"

    def refused_by_storm(self, res) -> bool:
        refused = res.returncode == 1 and UNRETRIED in res.stderr
        self.stats.refused_by_storm += refused
        return refused

    def moving_pages(self) -> str:
        """``keyledger sync`` (a subprocess) pages through the request log, each page slowed down, while
        new records keep arriving at its front (newest first): every page boundary shifts under it."""
        faults(self.dgemu, latency_ms=40)
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyledger", *self.cli_args(Op("sync"))],
            env=self.cli_env(), cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and not self.sync_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(MOVING_BATCHES):  # a fixed count (the log stays deterministic), paced to land mid-run
            self.traffic(self.rnd.choice(CUSTOMERS), 5, 5)
            time.sleep(0.06)
        _, err = proc.communicate()
        faults(self.dgemu, latency_ms=self.latency)
        assert proc.returncode == 0, f"sync while records arrive: exit {proc.returncode}: {err[-2000:]}"
        return "ok"

    def sync_running(self) -> bool:
        with self.engine.connect() as db:
            running = db.execute(select(sync_runs.c.id).where(sync_runs.c.status == "running")).first()
        return running is not None

    def invoice(self) -> str:
        report = InvoiceService(self.engine, self.rt.clock).run(self.period, customer="beta", finalize=True)
        self.remember_finalized()
        return ", ".join(e.outcome for e in report.entries) or "nothing"

    def remember_finalized(self) -> None:
        """The content hash of each invoice as it was when first seen finalized."""
        with self.engine.connect() as db:
            ids = db.execute(select(invoices.c.id).where(invoices.c.status == "finalized")).scalars().all()
        for inv_id in ids:
            self.finalized.setdefault(inv_id, invoice_hash(self.engine, self.rt.clock, inv_id))

    # ------------------------------------------------------------------ lookups

    def keys_of(self, ext: str) -> list:
        with self.engine.connect() as db:
            return db.execute(
                select(keys.c.id, keys.c.api_key_id, keys.c.status, keys.c.created_at)
                .join(customers, customers.c.id == keys.c.customer_id)
                .where(customers.c.external_id == ext)
                .order_by(keys.c.created_at, keys.c.id)
            ).all()

    def active_key(self, ext: str) -> str | None:
        live = [k.api_key_id for k in self.keys_of(ext) if k.status == "active"]
        return live[-1] if live else None

    def last_key(self, ext: str) -> str:
        return self.keys_of(ext)[-1].api_key_id

    def finish(self) -> None:
        """Storms off, late records visible; then what the worker would do: sync, budgets, deliver, the
        invoice run. Every invariant is checked after this."""
        faults(self.dgemu, error_rate=0, rate_limit_rate=0, retry_after_seconds=0, latency_ms=0,
               late_record_seconds=0)
        if self.late_seconds:
            time.sleep(self.late_seconds + 0.2)
        out = sync_then_budgets(self.rt, since=self.since)
        assert out.error is None, out.error
        BudgetService(self.rt).evaluate_all()
        deliver_due(self.rt)
        invoicing = InvoiceService(self.engine, self.rt.clock)
        invoicing.run(self.period, customer="beta")
        year, month = map(int, self.period.split("-"))
        # usage that arrived after the period's invoice was finalized: late lines on the next period's draft
        invoicing.run(f"{year + month // 12}-{month % 12 + 1:02d}", customer="beta")


def invoice_hash(engine, clock, invoice_id: str) -> str:
    doc = {k: v for k, v in InvoiceService(engine, clock).get(invoice_id).items() if k not in MUTABLE}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
