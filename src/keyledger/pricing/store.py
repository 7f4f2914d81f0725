"""SQL for plans and plan versions (SQLAlchemy Core). Every function takes an open connection; the
caller owns the transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime

from sqlalchemy import Connection, Row, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from keyledger.core.ids import new_id
from keyledger.db.tables_pricing import plan_versions, plans
from keyledger.pricing.model import Plan, PlanVersion
from keyledger.pricing.plans import plan_from_dict


def content_hash(plan: Plan) -> str:
    """sha256 of the plan's definition without its effective date (informational; equality is by value)."""
    terms = plan.to_dict()
    del terms["effective_from"]
    return hashlib.sha256(json.dumps(terms, sort_keys=True).encode()).hexdigest()


def lock_plan(conn: Connection, plan_id: str, now: datetime) -> None:
    """Create the plan's row if missing and lock it until the transaction ends (version numbering)."""
    dialect = conn.dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(plans)
    conn.execute(ins.values(id=plan_id, created_at=now).on_conflict_do_nothing(index_elements=["id"]))
    conn.execute(select(plans.c.id).where(plans.c.id == plan_id).with_for_update())


def insert_version(
    conn: Connection, plan: Plan, *, source: str, source_name: str, source_format: str, now: datetime
) -> PlanVersion:
    number = conn.execute(
        select(func.coalesce(func.max(plan_versions.c.version), 0)).where(plan_versions.c.plan_id == plan.id)
    ).scalar_one()
    version_id = new_id("plv")
    conn.execute(insert(plan_versions).values(
        id=version_id, plan_id=plan.id, version=number + 1, effective_from=plan.effective_from,
        name=plan.name, currency=plan.currency, mode=plan.mode.value, definition=plan.to_dict(),
        content_hash=content_hash(plan), source=source, source_name=source_name,
        source_format=source_format, imported_at=now,
    ))
    found = get_version(conn, version_id)
    assert found is not None
    return found


def _version(row: Row) -> PlanVersion:
    return PlanVersion(
        id=row.id, plan_id=row.plan_id, version=row.version, effective_from=row.effective_from,
        imported_at=row.imported_at, source_name=row.source_name, source_format=row.source_format,
        content_hash=row.content_hash,
        plan=plan_from_dict(row.definition, name=f"plan {row.plan_id} version {row.version}"),
    )


def get_version(conn: Connection, version_id: str) -> PlanVersion | None:
    row = conn.execute(select(plan_versions).where(plan_versions.c.id == version_id)).first()
    return _version(row) if row else None


def versions(conn: Connection, plan_id: str) -> list[PlanVersion]:
    rows = conn.execute(
        select(plan_versions).where(plan_versions.c.plan_id == plan_id).order_by(plan_versions.c.version)
    )
    return [_version(r) for r in rows]


def in_effect(conn: Connection, plan_id: str, day: date) -> PlanVersion | None:
    """The version in effect on ``day``: latest effective_from <= day, then the highest version."""
    row = conn.execute(
        select(plan_versions)
        .where(plan_versions.c.plan_id == plan_id, plan_versions.c.effective_from <= day)
        .order_by(plan_versions.c.effective_from.desc(), plan_versions.c.version.desc())
        .limit(1)
    ).first()
    return _version(row) if row else None


def plan_ids(conn: Connection) -> list[str]:
    return list(conn.execute(select(plans.c.id).order_by(plans.c.id)).scalars())


def source(conn: Connection, version_id: str) -> str | None:
    return conn.execute(select(plan_versions.c.source).where(plan_versions.c.id == version_id)).scalar()
