"""Invoice use cases: run (build or rebuild drafts), finalize, void, mark paid, credit notes, show, list,
and the margin report. Each changes the database in one transaction, or not at all; a run is one
transaction per batch of customers (see docs/invoices.md, "How a run works").

Concurrency: a run locks its batch's customer rows in id order (PostgreSQL ``FOR UPDATE``; SQLite writers
are serialized by ``BEGIN IMMEDIATE``) and their live invoices of the period; finalize locks the invoice,
then increments the number counter in the same transaction (see :func:`keyledger.invoices.store.next_number`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from keyledger.core.clock import Clock
from keyledger.core.errors import Conflict, Invalid, KeyledgerError, NotFound
from keyledger.core.ids import new_id
from keyledger.core.memory import paused_cyclic_gc
from keyledger.core.money import format_amount, minor_units, round_money, to_decimal
from keyledger.customers import store as customer_store
from keyledger.customers.model import Customer
from keyledger.db.outbox import enqueue
from keyledger.invoices import calc, store
from keyledger.invoices.model import (
    Action,
    Shard,
    Status,
    check_credit,
    check_shard,
    counter_name,
    format_number,
    local_bounds,
    money_str,
    num_str,
    remaining,
    shard_of,
    transition,
    validate_prefix,
    zone,
)
from keyledger.pricing.model import Period, PlanVersion, UsageLine
from keyledger.pricing.rates import EXACT
from keyledger.pricing.service import get_plan_version, plan_for


@dataclass(frozen=True)
class RunEntry:
    customer_id: str
    customer: str  # external id, for people
    outcome: str  # created | rebuilt | unchanged | skipped | failed | finalized
    invoice_id: str | None = None
    number: str | None = None
    total: Decimal | None = None
    currency: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer": self.customer,
            "outcome": self.outcome,
            "invoice_id": self.invoice_id,
            "number": self.number,
            "total": None if self.total is None else money_str(self.total, self.currency or "USD"),
            "currency": self.currency,
            "message": self.message,
        }


@dataclass
class RunReport:
    period: str
    entries: list[RunEntry] = field(default_factory=list)

    @property
    def failed(self) -> list[RunEntry]:
        return [e for e in self.entries if e.outcome == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "invoices": [e.to_dict() for e in self.entries]}


def _iso(at: Any) -> str | None:
    return None if at is None else at.isoformat()


def invoice_summary(inv: dict[str, Any]) -> dict[str, Any]:
    """PRODUCT §11 ``invoices list`` object."""
    return {
        "id": inv["id"],
        "number": inv["number"],
        "status": inv["status"],
        "customer_id": inv["customer_id"],
        "period": inv["period"],
        "currency": inv["currency"],
        "total": money_str(inv["total"], inv["currency"]),
    }


class _OneByOne(Exception):
    """A batch could not be built as a whole (rolled back): build its customers one by one."""


@dataclass(frozen=True)
class _Draft:
    """A customer's draft being built: its terms, invoice id, outcome and header."""

    customer: Customer
    version: PlanVersion
    invoice_id: str
    outcome: str  # created | rebuilt
    header: dict[str, Any]


@dataclass
class _PlanCache:
    """Plan versions read once per run: the version of each plan in effect for the period, and the
    versions recorded by earlier invoices (a lookup that fails fails the same way for every customer)."""

    effective: dict[str, PlanVersion | KeyledgerError] = field(default_factory=dict)
    recorded: dict[str, PlanVersion] = field(default_factory=dict)

    def in_effect(self, db: Connection, plan_id: str, start: date) -> PlanVersion:
        if plan_id not in self.effective:
            try:
                self.effective[plan_id] = plan_for(db, plan_id, start)
            except KeyledgerError as exc:
                self.effective[plan_id] = exc
        found = self.effective[plan_id]
        if isinstance(found, KeyledgerError):
            raise type(found)(str(found))
        return found

    def version(self, db: Connection, version_id: str) -> PlanVersion:
        if version_id not in self.recorded:
            self.recorded[version_id] = get_plan_version(db, version_id)
        return self.recorded[version_id]


@dataclass
class _RunState:
    """What every batch of a run shares: the high-water mark, and the windows shared by more customers
    than one batch holds, whose usage is summed once for the run (``store.window_sums``)."""

    hw: int
    shared: dict[tuple[datetime, datetime], set[str]] = field(default_factory=dict)
    sums: dict[tuple[datetime, datetime], dict[str, list[tuple]]] = field(default_factory=dict)

    def sum_shared(self, db: Connection) -> None:
        for (lo, hi), wanted in self.shared.items():
            self.sums[(lo, hi)] = store.window_sums(db, lo, hi, self.hw, wanted)

    def presummed(self, lo: datetime, hi: datetime) -> dict[str, list[tuple]] | None:
        return self.sums.get((lo, hi))


@dataclass
class InvoiceService:
    engine: Engine
    clock: Clock
    prefix: str = "INV"
    credit_prefix: str = "CN"
    due_days: int = 30
    actor: str = "cli"
    batch_size: int = 1000  # customers per run transaction

    def __post_init__(self) -> None:
        self.prefix = validate_prefix(self.prefix)
        self.credit_prefix = validate_prefix(self.credit_prefix)
        if self.prefix == self.credit_prefix:
            raise Invalid("invoice_prefix and credit_note_prefix must differ")

    @classmethod
    def from_settings(cls, engine: Engine, clock: Clock, settings: Any, actor: str = "cli") -> InvoiceService:
        return cls(
            engine,
            clock,
            prefix=getattr(settings, "invoice_prefix", "INV"),
            credit_prefix=getattr(settings, "credit_note_prefix", "CN"),
            due_days=int(getattr(settings, "invoice_due_days", 30)),
            actor=actor,
        )

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as db:
            yield db

    # ------------------------------------------------------------------------ run

    def run(
        self,
        period_key: str,
        *,
        customer: str | None = None,
        finalize: bool = False,
        shard: Shard | None = None,
        customer_ids: Collection[str] | None = None,
    ) -> RunReport:
        """Build (or rebuild) the draft of ``period_key`` for one customer or every customer with a plan.

        Customers are built in batches of ``batch_size``, each batch one transaction (see
        :meth:`_build_batch`). With ``customer`` given, any problem is an error; for all customers, a
        customer without a plan is skipped (reported) and one whose draft cannot be priced is reported
        as failed while the others are built. ``shard=(i, n)`` restricts the run to the customers with
        ``shard_of(id, n) == i`` (n workers with shards 0..n-1 split one run). ``customer_ids`` restricts
        a run for all customers to those ids (batched like it; the worker's customers of one period).
        The cyclic garbage collector is paused meanwhile (:mod:`keyledger.core.memory`).
        """
        with paused_cyclic_gc():
            return self._run(
                period_key, customer=customer, finalize=finalize, shard=shard, customer_ids=customer_ids
            )

    def _run(
        self,
        period_key: str,
        *,
        customer: str | None,
        finalize: bool,
        shard: Shard | None,
        customer_ids: Collection[str] | None,
    ) -> RunReport:
        if customer is not None and customer_ids is not None:
            raise Invalid("give one customer or a set of customer ids, not both")
        period = Period.month(period_key)
        if shard is not None:
            index, count = check_shard(shard)
        report = RunReport(period.key)
        with self._tx() as db:
            if customer is not None:
                targets = [customer_store.get_customer(db, customer)]
            else:
                targets = sorted(customer_store.list_customers(db), key=lambda c: c.external_id)
        if shard is not None:
            targets = [c for c in targets if shard_of(c.id, count) == index]
        if customer_ids is not None:
            wanted = set(customer_ids)
            targets = [c for c in targets if c.id in wanted]
        plans = _PlanCache()
        # The usage this run bills: records up to the high-water mark (every id up to it committed).
        with self._tx() as db:
            state = _RunState(store.high_water(db))
        by_window: dict[tuple[datetime, datetime], set[str]] = {}
        for c in targets:
            try:
                window = local_bounds(period.start, period.end, c.timezone)
            except KeyledgerError:
                continue  # the customer's own build reports it
            if c.plan is not None:
                by_window.setdefault(window, set()).add(c.id)
        state.shared = {w: ids for w, ids in by_window.items() if len(ids) > self.batch_size}
        if state.shared:  # read before the batches' write transactions, which it would hold up
            with self._tx() as db, store.run_tuning(db):
                state.sum_shared(db)
        for first in range(0, len(targets), self.batch_size):
            chunk = targets[first : first + self.batch_size]
            built: dict[str, RunEntry] = {}
            priced = [c for c in chunk if c.plan is not None]
            if customer is not None:
                if not priced:
                    c = chunk[0]
                    raise Invalid(
                        f"customer {c.external_id} has no plan (set one: keyledger customers update "
                        f"{c.external_id} --plan PLAN)"
                    )
                built = self._build_batch(priced, period, plans, state, strict=True)
            else:
                built = self._build_all(priced, period, plans, state)
            for c in chunk:
                entry = built.get(c.id) or RunEntry(c.id, c.external_id, "skipped", message="no plan")
                if finalize and entry.outcome in ("created", "rebuilt"):
                    entry = self._finalize_built(c, entry, strict=customer is not None)
                report.entries.append(entry)
        return report

    def _finalize_built(self, c: Customer, built: RunEntry, *, strict: bool) -> RunEntry:
        """Finalize a draft this run built. Another run may have finalized (or since voided) it in the
        meantime: that is reported ``unchanged``, as a run that found it so would; any other problem is
        this customer's failure (raised when ``strict``), never the run's."""
        try:
            inv = self.finalize(built.invoice_id)
        except KeyledgerError as exc:
            with self._tx() as db:
                now = store.get_invoice(db, built.invoice_id)
            if now is not None and now["status"] != Status.DRAFT:
                return RunEntry(
                    c.id, c.external_id, "unchanged", now["id"], now["number"], now["total"],
                    now["currency"], f"already {now['status']}",
                )
            if strict:
                raise
            return RunEntry(c.id, c.external_id, "failed", built.invoice_id, message=str(exc))
        return RunEntry(
            c.id, c.external_id, "finalized", inv["id"], inv["number"], inv["total"], inv["currency"],
            built.outcome,
        )

    def _build_all(
        self, chunk: list[Customer], period: Period, plans: _PlanCache, state: _RunState
    ) -> dict[str, RunEntry]:
        """One batch; customers it could not build (a draft that cannot be priced, a concurrent change)
        are then built one by one, each its own transaction, and reported failed with the reason."""
        try:
            built = self._build_batch(chunk, period, plans, state, strict=False)
        except _OneByOne:
            built = {}
        for c in chunk:
            if c.id not in built:
                try:
                    built.update(self._build_batch([c], period, plans, state, strict=True))
                except KeyledgerError as exc:
                    built[c.id] = RunEntry(c.id, c.external_id, "failed", message=str(exc))
        return built

    def _build_batch(
        self, chunk: list[Customer], period: Period, plans: _PlanCache, state: _RunState, *, strict: bool
    ) -> dict[str, RunEntry]:
        """Build the drafts of ``chunk`` in one transaction (set-based: one claim per usage window up to
        the run's high-water mark ``state.hw``, summed as it is claimed, executemany writes). ``strict``: any
        problem raises (and nothing is written); otherwise customers that fail a check before anything
        is written are left out of the result, and a problem after that raises :class:`_OneByOne` (the
        batch rolls back)."""
        try:
            with self._tx() as db, store.run_tuning(db):
                return self._build_batch_in(db, chunk, period, plans, state, strict=strict)
        except IntegrityError:
            if strict:
                ids = ", ".join(c.id for c in chunk)
                raise Conflict(f"invoice for {ids} {period.key} changed concurrently; run again") from None
            raise _OneByOne from None

    def _build_batch_in(
        self,
        db: Connection,
        chunk: list[Customer],
        period: Period,
        plans: _PlanCache,
        state: _RunState,
        *,
        strict: bool,
    ) -> dict[str, RunEntry]:
        now = self.clock.now()
        ids = [c.id for c in chunk]
        locked = store.lock_customers(db, ids)
        live = store.live_invoices(db, ids, period.key)
        entries: dict[str, RunEntry] = {}
        todo: list[_Draft] = []
        for listed in chunk:
            existing = live.get(listed.id)
            if existing is not None and existing["status"] != Status.DRAFT:
                entries[listed.id] = RunEntry(
                    listed.id,
                    listed.external_id,
                    "unchanged",
                    existing["id"],
                    existing["number"],
                    existing["total"],
                    existing["currency"],
                    f"already {existing['status']}",
                )
                continue
            try:
                todo.append(self._draft(db, locked.get(listed.id), listed, existing, period, plans, now))
            except KeyledgerError:
                if strict:
                    raise
        rebuilt = [d.invoice_id for d in todo if d.outcome == "rebuilt"]
        store.release_claims_of(db, rebuilt)
        # 1. this period's usage not billed by any invoice yet, up to the run's high-water mark: one
        #    claim per usage window (the customers of one time zone share it), summed as it is claimed.
        #    The claims are written at the end, with the drafts (``claims``: the rows still to insert,
        #    which later windows of the batch take into account).
        claims: list[dict[str, Any]] = []
        windows: dict[tuple[datetime, datetime], dict[str, str]] = {}
        for d in todo:
            windows.setdefault((d.header["starts_at"], d.header["ends_at"]), {})[d.customer.id] = d.invoice_id
        usage: dict[str, list[UsageLine]] = {}
        hw = state.hw
        for (lo, hi), invoice_of in windows.items():
            summed = state.presummed(lo, hi)
            usage.update(store.claim_window(db, invoice_of, lo, hi, hw, claims, late=False, presummed=summed))
        # 2. late usage of earlier periods whose invoices are already issued: one claim per earlier
        #    window, oldest first; only the drafts that claimed some are priced one by one.
        issued = store.issued_before_many(db, [d.customer.id for d in todo], period.key)
        late_windows: dict[tuple[str, datetime, datetime], dict[str, str]] = {}
        for d in todo:
            for q in issued.get(d.customer.id, []):
                key = (q["period"], q["starts_at"], q["ends_at"])
                late_windows.setdefault(key, {})[d.customer.id] = d.invoice_id
        late_usage: dict[tuple[str, str], list[UsageLine]] = {}
        for window in sorted(late_windows):
            q_period, lo, hi = window
            claimed = store.claim_window(db, late_windows[window], lo, hi, hw, claims, late=True)
            for invoice_id, found in claimed.items():
                late_usage[(invoice_id, q_period)] = found
        with_late = {invoice_id for invoice_id, _ in late_usage}
        # 3. price (pure), then write every draft's lines, totals and audit entry at once.
        lines: dict[str, list[calc.Line]] = {}
        created: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for d in todo:
            plan = d.version.plan
            try:
                own = calc.period_lines(plan, period, usage.get(d.invoice_id, []))
                if d.invoice_id in with_late:
                    own += self._late_lines(db, d, period, issued.get(d.customer.id, []), plans, late_usage)
            except KeyledgerError:
                if strict:
                    raise
                raise _OneByOne from None
            t = calc.totals(own, plan.tax_percent, plan.currency)
            lines[d.invoice_id] = own
            row = {
                "id": d.invoice_id,
                **d.header,
                "subtotal": t.subtotal,
                "tax": t.tax,
                "total": t.total,
                "provider_cost_usd": t.provider_cost_usd,
            }
            if d.outcome == "created":
                created.append({**row, "status": "draft", "created_at": now})
            else:
                updates.append(row)
            audits.append(
                {
                    "id": new_id("aud"),
                    "at": now,
                    "actor": self.actor,
                    "action": f"invoice.{d.outcome}",
                    "subject": d.invoice_id,
                    "details": {"customer_id": d.customer.id, "period": period.key,
                                "total": format_amount(t.total)},
                }
            )
            c = d.customer
            entries[c.id] = RunEntry(
                c.id, c.external_id, d.outcome, d.invoice_id, None, t.total, plan.currency
            )
        store.insert_invoices(db, created)
        store.update_invoices(db, updates)
        store.insert_claims(db, claims)
        store.delete_lines(db, rebuilt)
        store.insert_lines(db, lines)
        store.write_audits(db, audits)
        return entries

    def _draft(
        self,
        db: Connection,
        c: Customer | None,
        listed: Customer,
        existing: dict[str, Any] | None,
        period: Period,
        plans: _PlanCache,
        now: datetime,
    ) -> _Draft:
        """Check a customer's terms (plan version in effect, currency, time zone, exchange rate) and
        make the header of its draft; raises (before anything is written) when it cannot be built."""
        if c is None:
            raise NotFound(f"customer {listed.id!r} not found (give its id or external id)")
        if c.plan is None:
            raise Invalid(f"customer {c.external_id} has no plan")
        version = plans.in_effect(db, c.plan, period.start)
        plan = version.plan
        if plan.currency != c.currency:
            raise Invalid(
                f"customer {c.external_id} is billed in {c.currency} "
                f"but plan {plan.id!r} is in {plan.currency}"
            )
        lo, hi = local_bounds(period.start, period.end, c.timezone)
        header = {
            "customer_id": c.id,
            "period": period.key,
            "period_start": period.start,
            "period_end": period.end,
            "starts_at": lo,
            "ends_at": hi,
            "timezone": c.timezone,
            "currency": plan.currency,
            "plan_id": plan.id,
            "plan_version_id": version.id,
            "plan_version": version.version,
            "exchange_rate": plan.exchange_rate(period),
            "tax_percent": plan.tax_percent,
            "customer_name": c.name,
            "customer_external_id": c.external_id,
            "customer_email": c.email,
            "updated_at": now,
        }
        if existing is None:
            return _Draft(c, version, new_id("inv"), "created", header)
        return _Draft(c, version, existing["id"], "rebuilt", header)

    @staticmethod
    def _late_lines(
        db: Connection,
        d: _Draft,
        period: Period,
        issued: list[dict[str, Any]],
        plans: _PlanCache,
        late_usage: dict[tuple[str, str], list[UsageLine]],
    ) -> list[calc.Line]:
        """The late adjustment lines of a draft that claimed late usage, per earlier issued period
        (``late_usage``: what the draft claimed of each period's window)."""
        out: list[calc.Line] = []
        currency = d.version.plan.currency
        for q in issued:
            late = late_usage.get((d.invoice_id, q["period"]), [])
            if not late:
                continue
            q_plan = plans.version(db, q["plan_version_id"]).plan
            if q_plan.currency != currency:
                raise Invalid(
                    f"late usage from {q['period']} was billed in {q_plan.currency}, "
                    f"but {period.key} is billed in {currency}"
                )
            billed = store.billed_usage(
                db, d.customer.id, q["starts_at"], q["ends_at"], other_than=d.invoice_id
            )
            out += calc.late_lines(q_plan, Period.month(q["period"]), billed, late)
        return out

    # ------------------------------------------------------------------------ transitions

    def _locked(self, db: Connection, ref: str) -> dict[str, Any]:
        inv = store.get_invoice(db, ref, for_update=True)
        if inv is None:
            raise NotFound(f"invoice {ref!r} not found (give its id or number)")
        return inv

    def finalize(self, ref: str) -> dict[str, Any]:
        """Freeze a draft and give it the next number of the gapless sequence, in one transaction."""
        with self._tx() as db:
            inv = self._locked(db, ref)
            to = transition(inv["status"], Action.FINALIZE, ref)
            now = self.clock.now()
            issued = now.astimezone(zone(inv["timezone"])).date()
            seq = store.next_number(db, counter_name(self.prefix, issued.year))
            number = format_number(self.prefix, issued.year, seq)
            store.update_invoice(
                db,
                inv["id"],
                {
                    "status": to.value,
                    "number": number,
                    "issued_on": issued,
                    "due_on": issued + timedelta(days=self.due_days),
                    "finalized_at": now,
                    "updated_at": now,
                },
            )
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="invoice.finalized",
                subject=inv["id"],
                details={"number": number, "total": format_amount(inv["total"]), "currency": inv["currency"]},
            )
            done = store.get_invoice(db, inv["id"])
            event = {
                "invoice_id": done["id"],
                "number": number,
                "customer_id": done["customer_id"],
                "period": done["period"],
                "currency": done["currency"],
                "subtotal": format_amount(done["subtotal"]),
                "tax": format_amount(done["tax"]),
                "total": format_amount(done["total"]),
                "issued_on": issued.isoformat(),
                "due_on": done["due_on"].isoformat() if done["due_on"] else None,
            }
            enqueue(db, "invoice.finalized", event, now)
            return done

    def mark_paid(self, ref: str) -> dict[str, Any]:
        with self._tx() as db:
            inv = self._locked(db, ref)
            to = transition(inv["status"], Action.MARK_PAID, ref)
            now = self.clock.now()
            store.update_invoice(db, inv["id"], {"status": to.value, "paid_at": now, "updated_at": now})
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="invoice.paid",
                subject=inv["id"],
                details={"number": inv["number"]},
            )
            return store.get_invoice(db, inv["id"])

    def void(self, ref: str, *, reason: str | None = None) -> dict[str, Any]:
        """Void a finalized invoice: it keeps its number; its usage is released, so a new run of the
        period builds a replacement that bills it (no usage is lost)."""
        with self._tx() as db:
            inv = self._locked(db, ref)
            to = transition(inv["status"], Action.VOID, ref)
            if store.credit_notes_of(db, inv["id"]):
                raise Conflict(f"cannot void invoice {ref}: it has credit notes (credit the rest instead)")
            now = self.clock.now()
            store.update_invoice(
                db,
                inv["id"],
                {
                    "status": to.value,
                    "voided_at": now,
                    "void_reason": reason,
                    "updated_at": now,
                },
            )
            released = store.release_claims(db, inv["id"])
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="invoice.voided",
                subject=inv["id"],
                details={"number": inv["number"], "reason": reason, "released_usage_records": released},
            )
            return store.get_invoice(db, inv["id"])

    # ------------------------------------------------------------------------ credit notes

    def credit(
        self, ref: str, *, reason: str, amount: str | Decimal | None = None, lines: list[int] | None = None
    ) -> dict[str, Any]:
        """Issue a credit note against a finalized or paid invoice: the whole remaining amount (default),
        ``amount`` (before tax; tax at the invoice's rate is added) or whole ``lines`` (positions)."""
        if not reason or not reason.strip():
            raise Invalid("a credit note needs a reason")
        if amount is not None and lines:
            raise Invalid("give an amount or lines to credit, not both")
        with self._tx() as db:
            inv = self._locked(db, ref)
            transition(inv["status"], Action.CREDIT, ref)
            label, cur = inv["number"], inv["currency"]
            previous = store.credit_notes_of(db, inv["id"])
            left = remaining(inv["subtotal"], inv["tax"], [(p["subtotal"], p["tax"]) for p in previous])
            credited_lines: list[dict[str, Any]] = []
            if lines:
                by_pos = {i: line for i, line in enumerate(store.lines_of(db, inv["id"]), start=1)}
                done = {entry["position"] for p in previous for entry in p["lines"]}
                for pos in sorted(set(lines)):
                    if pos not in by_pos:
                        raise Invalid(f"invoice {label} has no line {pos} (lines 1..{len(by_pos)})")
                    if pos in done:
                        raise Conflict(f"line {pos} of invoice {label} was already credited")
                    credited_lines.append(
                        {
                            "position": pos,
                            "description": by_pos[pos].description,
                            "amount": format_amount(by_pos[pos].amount),
                        }
                    )
                sub = sum((by_pos[p["position"]].amount for p in credited_lines), Decimal(0))
                tax = min(self._tax(sub, inv), left.tax)
            elif amount is not None:
                sub = to_decimal(amount, "amount")
                if -sub.as_tuple().exponent > minor_units(cur):
                    raise Invalid(f"amount {amount}: at most {minor_units(cur)} decimal places for {cur}")
                tax = min(self._tax(sub, inv), left.tax)
            else:
                sub, tax = left.subtotal, left.tax
            check_credit(sub, tax, left, cur, label)
            now = self.clock.now()
            year = now.astimezone(zone(inv["timezone"])).year
            number = format_number(
                self.credit_prefix, year, store.next_number(db, counter_name(self.credit_prefix, year))
            )
            note = {
                "id": new_id("crn"),
                "number": number,
                "invoice_id": inv["id"],
                "customer_id": inv["customer_id"],
                "currency": cur,
                "subtotal": sub,
                "tax": tax,
                "total": EXACT.add(sub, tax),
                "reason": reason.strip(),
                "lines": credited_lines,
                "issued_at": now,
            }
            store.insert_credit_note(db, note)
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="credit_note.issued",
                subject=note["id"],
                details={"number": number, "invoice": label, "total": format_amount(note["total"])},
            )
            return credit_note_dict(note, label)

    @staticmethod
    def _tax(sub: Decimal, inv: dict[str, Any]) -> Decimal:
        return round_money(
            EXACT.divide(EXACT.multiply(sub, inv["tax_percent"]), Decimal(100)), inv["currency"]
        )

    # ------------------------------------------------------------------------ reads

    def get(self, ref: str, *, of_customer: str | None = None) -> dict[str, Any]:
        """An invoice (id or number) as a document. ``of_customer``: another customer's invoice is not
        found, exactly like a missing one (portal callers)."""
        with self._tx() as db:
            inv = store.get_invoice(db, ref)
            if inv is None or (of_customer is not None and inv["customer_id"] != of_customer):
                raise NotFound(f"invoice {ref!r} not found (give its id or number)")
            return self._document(db, inv)

    def credit_note(self, ref: str, *, of_customer: str | None = None) -> dict[str, Any]:
        """A credit note (id or number) as a document: :func:`credit_note_dict` with what its invoice
        says of the customer, the period and the tax rate (what the PDF/HTML shows). ``of_customer``:
        another customer's credit note is not found, exactly like a missing one (portal callers)."""
        with self._tx() as db:
            note = store.get_credit_note(db, ref)
            if note is not None and of_customer is not None and note["customer_id"] != of_customer:
                note = None
            inv = None if note is None else store.get_invoice(db, note["invoice_id"])
            if note is None or inv is None:
                raise NotFound(f"credit note {ref!r} not found (give its id or number)")
            doc = self._document(db, inv)
        out = credit_note_dict(note, inv["number"])
        out.update(
            {
                "issued_on": note["issued_at"].astimezone(zone(inv["timezone"])).date().isoformat(),
                "customer": doc["customer"],
                "period": doc["period"],
                "period_start": doc["period_start"],
                "period_last_day": doc["period_last_day"],
                "tax_percent": doc["tax_percent"],
            }
        )
        return out

    def _document(self, db: Connection, inv: dict[str, Any]) -> dict[str, Any]:
        lines = store.lines_of(db, inv["id"])
        notes = store.credit_notes_of(db, inv["id"])
        out = invoice_summary(inv)
        cur = inv["currency"]
        out.update(
            {
                "subtotal": money_str(inv["subtotal"], cur),
                "tax": money_str(inv["tax"], cur),
                "total": money_str(inv["total"], cur),
                "lines": [line.to_dict(cur) for line in lines],
                "tax_percent": num_str(inv["tax_percent"]),
                "provider_cost_usd": num_str(inv["provider_cost_usd"]),
                "exchange_rate": num_str(inv["exchange_rate"]),
                "customer": {
                    "id": inv["customer_id"],
                    "external_id": inv["customer_external_id"],
                    "name": inv["customer_name"],
                    "email": inv["customer_email"],
                },
                "plan": {
                    "id": inv["plan_id"],
                    "version": inv["plan_version"],
                    "version_id": inv["plan_version_id"],
                },
                "period_start": inv["period_start"].isoformat(),
                "period_end": inv["period_end"].isoformat(),
                "period_last_day": (inv["period_end"] - timedelta(days=1)).isoformat(),
                "timezone": inv["timezone"],
                "issued_on": None if inv["issued_on"] is None else inv["issued_on"].isoformat(),
                "due_on": None if inv["due_on"] is None else inv["due_on"].isoformat(),
                "created_at": _iso(inv["created_at"]),
                "finalized_at": _iso(inv["finalized_at"]),
                "paid_at": _iso(inv["paid_at"]),
                "voided_at": _iso(inv["voided_at"]),
                "void_reason": inv["void_reason"],
                "credit_notes": [credit_note_dict(n, inv["number"]) for n in notes],
            }
        )
        return out

    def list(
        self, *, period: str | None = None, customer: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        if period is not None:
            period = Period.month(period).key
        if status is not None and status not in {s.value for s in Status}:
            raise Invalid(f"status {status!r}: use one of draft, finalized, paid, void")
        with self._tx() as db:
            cid = customer_store.get_customer(db, customer).id if customer else None
            return [
                invoice_summary(i)
                for i in store.list_invoices(db, period=period, customer_id=cid, status=status)
            ]

    # ------------------------------------------------------------------------ margin

    def margin(self, period_key: str) -> dict[str, Any]:
        """Price vs provider cost per customer and line item, from the period's live invoices' lines.

        Amounts are in each invoice's currency; provider costs are USD and are also shown converted at
        the invoice's exchange rate (exact: a product, not rounded), so margin = amount - converted cost.
        Late adjustments count in the period of the invoice that bills them.
        """
        period = Period.month(period_key)
        with self._tx() as db:
            invs = [i for i in store.list_invoices(db, period=period.key) if i["status"] != Status.VOID]
            credited = store.credited_in(db, [i["id"] for i in invs])
            customers = []
            for inv in invs:
                rows: dict[str, dict[str, Decimal]] = {}
                for line in store.lines_of(db, inv["id"]):
                    key = line.line_item or f"({line.kind.replace('_', ' ')})"
                    r = rows.setdefault(key, {"amount": Decimal(0), "provider_cost_usd": Decimal(0)})
                    r["amount"] = EXACT.add(r["amount"], line.amount)
                    r["provider_cost_usd"] = EXACT.add(r["provider_cost_usd"], line.provider_cost_usd)
                fx = inv["exchange_rate"]
                items = []
                for key in sorted(rows):
                    r = rows[key]
                    cost = EXACT.multiply(r["provider_cost_usd"], fx)
                    items.append(
                        _margin_row(
                            {"line_item": key}, r["amount"], r["provider_cost_usd"], cost, inv["currency"]
                        )
                    )
                cost_conv = EXACT.multiply(inv["provider_cost_usd"], fx)
                customers.append(
                    {
                        **_margin_row(
                            {
                                "customer_id": inv["customer_id"],
                                "customer": inv["customer_external_id"],
                                "invoice_id": inv["id"],
                                "number": inv["number"],
                                "status": inv["status"],
                                "currency": inv["currency"],
                                "exchange_rate": num_str(fx),
                            },
                            inv["subtotal"],
                            inv["provider_cost_usd"],
                            cost_conv,
                        ),
                        "credited": money_str(credited.get(inv["id"], Decimal(0)), inv["currency"]),
                        "lines": items,
                    }
                )
        totals: dict[str, dict[str, Decimal]] = {}
        for inv in invs:
            t = totals.setdefault(
                inv["currency"], {"amount": Decimal(0), "cost": Decimal(0), "usd": Decimal(0)}
            )
            t["amount"] = EXACT.add(t["amount"], inv["subtotal"])
            t["usd"] = EXACT.add(t["usd"], inv["provider_cost_usd"])
            t["cost"] = EXACT.add(t["cost"], EXACT.multiply(inv["provider_cost_usd"], inv["exchange_rate"]))
        return {
            "period": period.key,
            "customers": customers,
            "totals": [
                _margin_row({"currency": cur}, t["amount"], t["usd"], t["cost"])
                for cur, t in sorted(totals.items())
            ],
        }


def _margin_row(
    base: dict[str, Any], amount: Decimal, cost_usd: Decimal, cost: Decimal, currency: str = "USD"
) -> dict[str, Any]:
    margin = EXACT.subtract(amount, cost)
    # A ratio for people, not money: 4 significant digits, never used in any amount.
    pct = num_str(_RATIO.divide(EXACT.multiply(margin, Decimal(100)), amount)) if amount else None
    return {
        **base,
        "amount": money_str(amount, base.get("currency") or currency),
        "provider_cost_usd": num_str(cost_usd),
        "provider_cost": num_str(cost),
        "margin": num_str(margin),
        "margin_percent": pct,
    }


_RATIO = Context(prec=4)


def credit_note_dict(note: dict[str, Any], invoice_number: str | None) -> dict[str, Any]:
    return {
        "id": note["id"],
        "number": note["number"],
        "invoice_id": note["invoice_id"],
        "invoice_number": invoice_number,
        "customer_id": note["customer_id"],
        "currency": note["currency"],
        "subtotal": money_str(note["subtotal"], note["currency"]),
        "tax": money_str(note["tax"], note["currency"]),
        "total": money_str(note["total"], note["currency"]),
        "reason": note["reason"],
        "lines": note["lines"],
        "issued_at": _iso(note["issued_at"])
        if isinstance(note["issued_at"], datetime)
        else note["issued_at"],
    }
