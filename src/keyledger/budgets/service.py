"""Budget use cases: set/list budgets, evaluate them, enforce ``revoke``.

Evaluation of one customer is one transaction that locks the customer's row of the current period
(``budget_periods``), computes the period's spend, asks :func:`keyledger.budgets.model.evaluate` what to
fire, and writes — together — the fired thresholds, the events (``budget.threshold_reached``,
``budget.projected_to_exceed``) and, for ``revoke`` at 100 %, the suspension (``customer.suspended``)
and the state ``revoke_pending``. Concurrent evaluations therefore fire each threshold and suspend once.

Enforcement runs after that commit, never inside a transaction: whoever holds the period's enforcement
lease deletes the customer's active keys at Deepgram (``KeyService.revoke``: crash-safe, idempotent, one
``key.revoked`` per key). If Deepgram fails, the state stays ``revoke_pending`` and the next evaluation
(the next ``keyledger sync``, or any worker cycle) retries until Deepgram confirms every key is gone;
then the state becomes ``revoked``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from keyledger.budgets import model, store
from keyledger.core.errors import KeyledgerError, NotFound, ProviderError
from keyledger.core.faults import fault_point
from keyledger.core.ids import new_id
from keyledger.core.leases import dead_local_owner, local_owner
from keyledger.core.money import format_amount
from keyledger.customers import store as customer_store
from keyledger.customers.service import Deps, KeyService, suspend_in
from keyledger.db.outbox import enqueue

log = structlog.get_logger(__name__)


@dataclass
class Outcome:
    customer_id: str
    period: str
    spent: Decimal
    percent: Decimal
    state: str
    fired: tuple[int, ...] = ()
    projected: Decimal | None = None
    suspended: bool = False
    enforced: bool = False  # this call ran the enforcement (holder of the lease)
    revoked_keys: list[str] = field(default_factory=list)
    error: str | None = None


def enforce_lease_free(row: Any, now: datetime) -> bool:
    """No one is enforcing: no lease, an expired one, or one held by a process on this host that died
    (killed mid-revocation: the next evaluation finishes the job instead of waiting out the lease)."""
    until = row["enforce_until"]
    return until is None or until <= now or dead_local_owner(row["enforce_owner"])


def _owner() -> str:
    return local_owner(new_id("enf"))


def _pct(value: Decimal) -> str:
    return format_amount(value.quantize(Decimal("0.01")))


@dataclass
class BudgetService:
    deps: Deps
    actor: str = "budgets"
    enforce_lease_seconds: int = 120

    # ------------------------------------------------------------------ configuration

    def set(
        self,
        customer: str,
        *,
        limit: str | Decimal,
        period: str = "month",
        thresholds: str | None = None,
        action: str = "notify",
    ) -> dict[str, Any]:
        budget_limit = model.parse_limit(limit if isinstance(limit, str) else str(limit))
        ths = model.parse_thresholds(thresholds)
        act = model.parse_action(action)
        per = model.parse_period(period)
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            cust = customer_store.get_customer(db, customer)
            budget = model.Budget(cust.id, budget_limit, ths, act, per)
            created = store.upsert_budget(db, budget, now)
            customer_store.write_audit(
                db,
                at=now,
                actor=self.actor,
                action="budget.create" if created else "budget.update",
                subject=cust.id,
                details={
                    "limit": format_amount(budget_limit),
                    "thresholds": list(ths),
                    "action": act,
                    "period": per,
                },
            )
        return self.show(cust.id)

    def remove(self, customer: str) -> None:
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            cust = customer_store.get_customer(db, customer)
            if not store.delete_budget(db, cust.id):
                raise NotFound(f"customer {cust.external_id} has no budget")
            customer_store.write_audit(db, at=now, actor=self.actor, action="budget.delete", subject=cust.id)

    def show(self, customer: str) -> dict[str, Any]:
        with self.deps.engine.connect() as db:
            cust = customer_store.get_customer(db, customer)
            budget = store.get_budget(db, cust.id)
            if budget is None:
                raise NotFound(f"customer {cust.external_id} has no budget")
            return self._row(db, budget, cust)

    def list(self) -> list[dict[str, Any]]:
        with self.deps.engine.connect() as db:
            out = []
            for budget in store.list_budgets(db):
                cust = customer_store.get_customer(db, budget.customer_id)
                out.append(self._row(db, budget, cust))
        return sorted(out, key=lambda r: r["external_id"])

    def _row(self, db, budget: model.Budget, cust) -> dict[str, Any]:
        period = model.period_at(self.deps.clock.now(), cust.timezone)
        spent = store.spend(db, cust.id, period)
        state = store.get_period(db, cust.id, period.key)
        return {
            "customer_id": cust.id,
            "external_id": cust.external_id,
            "period": period.key,
            "limit": budget.limit,
            "spent": spent,
            "percent": model.percent_of(spent, budget.limit).quantize(Decimal("0.01")),
            "thresholds": list(budget.thresholds),
            "action": budget.action,
            "state": state["state"] if state else "ok",
            "fired": list(state["fired"]) if state else [],
            "customer_status": cust.status,
        }

    # ------------------------------------------------------------------ evaluation

    def evaluate_all(self) -> list[Outcome]:
        """Evaluate every budget, then retry enforcement still pending from any period."""
        with self.deps.engine.connect() as db:
            ids = [b.customer_id for b in store.list_budgets(db)]
        outcomes: list[Outcome] = []
        for cid in ids:
            try:
                out = self.evaluate(cid)
            except KeyledgerError as exc:  # one customer's problem must not stop the others
                log.warning("budget.evaluate_failed", customer_id=cid, error=str(exc))
                continue
            if out is not None:
                outcomes.append(out)
        seen = {(o.customer_id, o.period) for o in outcomes}
        with self.deps.engine.connect() as db:
            pending = store.pending_enforcements(db)
        for cid, period in pending:
            if (cid, period) not in seen:
                self._try_enforce(cid, period)
        return outcomes

    def evaluate(self, customer: str) -> Outcome | None:
        """Evaluate one customer's budget now; None if the customer has no budget."""
        now = self.deps.clock.now()
        owner = _owner()
        with self.deps.engine.begin() as db:
            cust = customer_store.get_customer(db, customer)
            budget = store.get_budget(db, cust.id)
            if budget is None:
                return None
            period = model.period_at(now, cust.timezone)
            row = store.lock_period(db, cust.id, period.key, now)
            cust = customer_store.get_customer(db, cust.id)  # re-read under the lock
            state = row["state"]
            if state == "revoked" and cust.status == "active":
                state = "reinstated"  # the operator reinstated the customer after the revoke
            spent = store.spend(db, cust.id, period)
            d = model.evaluate(
                budget,
                spent=spent,
                period=period,
                now=now,
                fired=tuple(row["fired"]),
                projected_fired=bool(row["projected_fired"]),
                state=state,
            )
            base = {
                "customer_id": cust.id,
                "external_id": cust.external_id,
                "period": period.key,
                "limit": format_amount(budget.limit),
                "spent": format_amount(spent),
                "percent": _pct(d.percent),
                "action": budget.action,
                "currency": "USD",
            }
            for t in d.fire:
                enqueue(db, "budget.threshold_reached", {**base, "threshold": t}, now)
            if d.projected is not None:
                enqueue(
                    db,
                    "budget.projected_to_exceed",
                    {**base, "projected": format_amount(d.projected.quantize(Decimal("0.0001")))},
                    now,
                )
            suspended = False
            if d.enforce:
                before = cust.status
                cust = suspend_in(
                    db,
                    cust,
                    at=now,
                    actor=self.actor,
                    details={"revoke_keys": True, "reason": "budget", "period": period.key},
                )
                suspended = before != "suspended"
            values: dict[str, Any] = {
                "fired": list(d.fired_after),
                "projected_fired": bool(row["projected_fired"]) or d.projected is not None,
                "state": d.state,
                "spent_usd": spent,
                "evaluated_at": now,
            }
            free = enforce_lease_free(row, now)
            take = d.state == "revoke_pending" and free
            if take:
                values.update(
                    enforce_owner=owner, enforce_until=now + timedelta(seconds=self.enforce_lease_seconds)
                )
            store.update_period(db, cust.id, period.key, values)
        out = Outcome(cust.id, period.key, spent, d.percent, d.state, d.fire, d.projected, suspended)
        fault_point("budgets.after_evaluate")
        if take:
            self._enforce(cust.id, period.key, owner, out)
        return out

    def _try_enforce(self, customer_id: str, period: str) -> Outcome | None:
        now = self.deps.clock.now()
        owner = _owner()
        with self.deps.engine.begin() as db:
            row = store.lock_period(db, customer_id, period, now)
            if row["state"] != "revoke_pending":
                return None
            if not enforce_lease_free(row, now):
                return None
            store.update_period(
                db,
                customer_id,
                period,
                {
                    "enforce_owner": owner,
                    "enforce_until": now + timedelta(seconds=self.enforce_lease_seconds),
                },
            )
        out = Outcome(customer_id, period, row["spent_usd"], Decimal(0), "revoke_pending")
        self._enforce(customer_id, period, owner, out)
        return out

    def _enforce(self, customer_id: str, period: str, owner: str, out: Outcome) -> None:
        """Delete the customer's active keys at Deepgram; done when none is left."""
        out.enforced = True
        with self.deps.engine.connect() as db:
            cust = customer_store.get_customer(db, customer_id)
            active = customer_store.list_keys(db, customer_id=customer_id, status="active")
        errors: list[str] = []
        if cust.status == "active":
            final = "reinstated"  # reinstated before enforcement finished: the operator decided
        else:
            keys = KeyService(self.deps, actor=self.actor)
            for k in active:
                try:
                    key, already = keys.revoke(k.id, reason="suspend")
                    fault_point("budgets.after_revoke_key")
                    if not already:
                        out.revoked_keys.append(key.id)
                except ProviderError as exc:
                    errors.append(f"{k.id}: {exc}")
            final = "revoke_pending" if errors else "revoked"
        now = self.deps.clock.now()
        with self.deps.engine.begin() as db:
            row = store.lock_period(db, customer_id, period, now)
            if row["enforce_owner"] != owner:
                return  # our lease ran out and someone else took over; they record the outcome
            store.update_period(
                db,
                customer_id,
                period,
                {
                    "state": final if row["state"] == "revoke_pending" else row["state"],
                    "enforce_owner": None,
                    "enforce_until": None,
                    "enforce_attempts": int(row["enforce_attempts"]) + 1,
                    "last_error": "; ".join(errors)[:1000] if errors else None,
                },
            )
        out.state = final
        out.error = "; ".join(errors) if errors else None
        if errors:
            log.warning("budget.revoke_pending", customer_id=customer_id, period=period, error=out.error)
