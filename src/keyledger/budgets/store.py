"""SQL for budgets and budget periods, and the spend query. The caller owns the transaction."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from keyledger.budgets.model import Budget, Period
from keyledger.db.tables_budgets import budget_periods, budgets
from keyledger.db.tables_customers import connections
from keyledger.db.tables_usage import usage_daily, usage_records

bp = budget_periods.c


def _insert(db: Connection):
    if db.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert


def _budget(row) -> Budget:
    m = row._mapping
    return Budget(
        customer_id=m["customer_id"],
        limit=m["limit_usd"],
        thresholds=tuple(int(t) for t in m["thresholds"]),
        action=m["action"],
        period=m["period"],
    )


def upsert_budget(db: Connection, budget: Budget, now: datetime) -> bool:
    """Insert or replace a customer's budget; True when it was new."""
    q = select(budgets.c.customer_id).where(budgets.c.customer_id == budget.customer_id)
    exists = db.execute(q).first()
    values = {
        "limit_usd": budget.limit,
        "thresholds": list(budget.thresholds),
        "action": budget.action,
        "period": budget.period,
        "updated_at": now,
    }
    if exists:
        db.execute(update(budgets).where(budgets.c.customer_id == budget.customer_id).values(**values))
        return False
    db.execute(_insert(db)(budgets).values(customer_id=budget.customer_id, created_at=now, **values))
    return True


def delete_budget(db: Connection, customer_id: str) -> bool:
    return db.execute(delete(budgets).where(budgets.c.customer_id == customer_id)).rowcount > 0


def get_budget(db: Connection, customer_id: str) -> Budget | None:
    row = db.execute(select(budgets).where(budgets.c.customer_id == customer_id)).first()
    return _budget(row) if row else None


def list_budgets(db: Connection) -> list[Budget]:
    return [_budget(r) for r in db.execute(select(budgets).order_by(budgets.c.customer_id))]


def lock_period(db: Connection, customer_id: str, period: str, now: datetime) -> dict[str, Any]:
    """The customer's state for ``period``, created if missing, locked until the transaction ends."""
    db.execute(
        _insert(db)(budget_periods)
        .values(
            customer_id=customer_id,
            period=period,
            fired=[],
            projected_fired=False,
            state="ok",
            spent_usd=Decimal(0),
            evaluated_at=now,
            enforce_attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["customer_id", "period"])
    )
    row = (
        db.execute(
            select(budget_periods).where(bp.customer_id == customer_id, bp.period == period).with_for_update()
        )
        .mappings()
        .one()
    )
    return dict(row)


def get_period(db: Connection, customer_id: str, period: str) -> dict[str, Any] | None:
    row = (
        db.execute(select(budget_periods).where(bp.customer_id == customer_id, bp.period == period))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def update_period(db: Connection, customer_id: str, period: str, values: dict[str, Any]) -> None:
    where = (bp.customer_id == customer_id, bp.period == period)
    db.execute(update(budget_periods).where(*where).values(**values))


def pending_enforcements(db: Connection) -> list[tuple[str, str]]:
    rows = db.execute(select(bp.customer_id, bp.period).where(bp.state == "revoke_pending"))
    return [(r.customer_id, r.period) for r in rows]


def _midnight(d) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def spend(db: Connection, customer_id: str, period: Period) -> Decimal:
    """The customer's provider cost (USD) for usage created in ``[period.starts_at, period.ends_at)``.

    Whole UTC days come from the daily rollups (``usage_daily``); the partial days at either end of a
    period in a non-UTC time zone come from the ledger's records, bounded by instant.
    """
    lo, hi = period.starts_at.astimezone(UTC), period.ends_at.astimezone(UTC)
    first_full = lo.date() if lo == _midnight(lo.date()) else lo.date() + timedelta(days=1)
    end_full = hi.date()  # exclusive
    total = Decimal(0)
    if first_full < end_full:
        ud = usage_daily.c
        value = db.execute(
            select(func.sum(ud.cost_usd)).where(
                ud.customer_id == customer_id, ud.day >= first_full, ud.day < end_full
            )
        ).scalar()
        total += _dec(value)
    partial = []
    if lo < _midnight(first_full):
        partial.append((lo, min(_midnight(first_full), hi)))
    if hi > _midnight(end_full) and _midnight(end_full) >= lo and end_full >= first_full:
        partial.append((_midnight(end_full), hi))
    if partial:
        ur = usage_records.c
        conn_ids = [r.id for r in db.execute(select(connections.c.id))]
        for a, b in partial:
            value = db.execute(
                select(func.sum(ur.cost_usd)).where(
                    ur.connection_id.in_(conn_ids),
                    ur.created >= a,
                    ur.created < b,
                    ur.customer_id == customer_id,
                )
            ).scalar()
            total += _dec(value)
    return total


def _dec(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    # SQLite sums ExactAmount's scaled integers.
    return Decimal(int(value)).scaleb(-10)
