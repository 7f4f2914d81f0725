"""Pricing use cases: import a plan file as a new version, list and show plans, find the version in
effect for a period.

Reads accept an Engine or an open Connection (so invoicing can call them inside its own transaction).
Rating itself is pure: :func:`keyledger.pricing.rate.rate_usage` (re-exported here as ``rate_usage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, Engine

from keyledger.core.clock import Clock
from keyledger.core.errors import Conflict, NotFound
from keyledger.customers.store import write_audit
from keyledger.pricing import store
from keyledger.pricing.model import Period, Plan, PlanVersion, RatedPeriod
from keyledger.pricing.plans import detect_format, load_plan_file, parse_plan_text
from keyledger.pricing.rate import UsageInput, rate_usage

__all__ = [
    "ImportResult", "PlanSummary", "PricedPeriod", "get_plan_version", "import_plan_file", "import_plan_text",
    "list_plans", "plan_for", "plan_versions", "price_period", "rate_usage",
]

DB = Engine | Connection


@dataclass(frozen=True)
class ImportResult:
    version: PlanVersion  # the new version, or the one already in effect with identical terms
    created: bool  # False: identical terms were already in effect from that date (a no-op)
    backdated: bool  # the new version takes effect before the day it was imported


@dataclass(frozen=True)
class PlanSummary:
    plan_id: str
    latest: PlanVersion  # the last imported
    current: PlanVersion | None  # in effect today (None: every version starts in the future)
    versions: int


@dataclass(frozen=True)
class PricedPeriod:
    version: PlanVersion  # record version.id on the invoice: re-rating uses get_plan_version(id)
    rated: RatedPeriod


@contextmanager
def _reading(db: DB) -> Iterator[Connection]:
    if isinstance(db, Connection):
        yield db
    else:
        with db.connect() as conn:
            yield conn


def import_plan_file(engine: Engine, path: str | Path, *, clock: Clock, actor: str = "cli") -> ImportResult:
    """Validate a plan file and store it as a new version (a no-op when nothing changes)."""
    plan, text, fmt = load_plan_file(path, today=clock.now().date())
    return _import(engine, plan, text, Path(path).name, fmt, clock=clock, actor=actor)


def import_plan_text(
    engine: Engine, text: str, *, name: str, clock: Clock, fmt: str | None = None, actor: str = "api"
) -> ImportResult:
    """Like :func:`import_plan_file` for a plan's text (``name`` names it in errors; its suffix gives
    the format unless ``fmt`` is given)."""
    fmt = fmt or detect_format(name)
    plan = parse_plan_text(text, name=name, fmt=fmt, today=clock.now().date())
    return _import(engine, plan, text, name, fmt, clock=clock, actor=actor)


def _import(
    engine: Engine, plan: Plan, text: str, source_name: str, fmt: str, *, clock: Clock, actor: str
) -> ImportResult:
    now = clock.now()
    with engine.begin() as conn:
        store.lock_plan(conn, plan.id, now)
        existing = store.versions(conn, plan.id)
        other = next((v for v in existing if v.plan.currency != plan.currency), None)
        if other is not None:
            raise Conflict(
                f"plan {plan.id!r} bills in {other.plan.currency} (version {other.version}); a plan's "
                f"currency cannot change to {plan.currency}: import it under a new id"
            )
        current = store.in_effect(conn, plan.id, plan.effective_from)
        if current is not None and current.plan.same_terms(plan):
            return ImportResult(current, created=False, backdated=False)
        version = store.insert_version(
            conn, plan, source=text, source_name=source_name, source_format=fmt, now=now
        )
        write_audit(
            conn, at=now, actor=actor, action="plan.imported", subject=f"plan:{plan.id}",
            details={"version": version.version, "version_id": version.id,
                     "effective_from": plan.effective_from.isoformat(), "source_name": source_name},
        )
    return ImportResult(version, created=True, backdated=plan.effective_from < now.date())


def plan_versions(db: DB, plan_id: str) -> list[PlanVersion]:
    """Every version of a plan, oldest first."""
    with _reading(db) as conn:
        found = store.versions(conn, plan_id)
    if not found:
        raise NotFound(f"no plan {plan_id!r} (import one with: keyledger plans import FILE)")
    return found


def plan_for(db: DB, plan_id: str, period_start: date) -> PlanVersion:
    """The version of ``plan_id`` in effect on ``period_start`` (latest effective_from on or before it)."""
    with _reading(db) as conn:
        found = store.in_effect(conn, plan_id, period_start)
        if found is None:
            first = store.versions(conn, plan_id)
    if found is not None:
        return found
    if not first:
        raise NotFound(f"no plan {plan_id!r} (import one with: keyledger plans import FILE)")
    earliest = min(v.effective_from for v in first)
    raise NotFound(
        f"plan {plan_id!r} has no version in effect on {period_start.isoformat()} "
        f"(its first takes effect {earliest.isoformat()})"
    )


def get_plan_version(db: DB, version_id: str) -> PlanVersion:
    """One stored version by id (what an invoice recorded)."""
    with _reading(db) as conn:
        found = store.get_version(conn, version_id)
    if found is None:
        raise NotFound(f"no plan version {version_id!r}")
    return found


def list_plans(db: DB, *, today: date) -> list[PlanSummary]:
    out = []
    with _reading(db) as conn:
        for plan_id in store.plan_ids(conn):
            versions = store.versions(conn, plan_id)
            if not versions:
                continue
            current = store.in_effect(conn, plan_id, today)
            out.append(PlanSummary(plan_id, versions[-1], current, len(versions)))
    return out


def price_period(db: DB, plan_id: str, period: Period, usage: Iterable[UsageInput]) -> PricedPeriod:
    """The period's usage priced under the plan version in effect at the period's start."""
    version = plan_for(db, plan_id, period.start)
    return PricedPeriod(version, rate_usage(version.plan, period, usage))
