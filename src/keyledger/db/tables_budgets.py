"""Tables for budgets (owned by ``keyledger.budgets``): one budget per customer and the state of each of
its periods (which thresholds fired, enforcement progress).

``budget_periods`` is the serialization point of evaluation: an evaluation locks the customer's row of the
current period (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes writers),
so concurrent evaluations fire each threshold once. The enforcement lease (``enforce_owner``,
``enforce_until``) lets exactly one process at a time delete the customer's keys.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, text

from keyledger.db.metadata import ExactAmount, UTCDateTime, metadata

budgets = Table(
    "budgets",
    metadata,
    Column("customer_id", String(40), ForeignKey("customers.id"), primary_key=True),
    Column("limit_usd", ExactAmount(), nullable=False),  # provider cost (USD) per period
    Column("period", String(16), nullable=False),  # month
    Column("thresholds", JSON, nullable=False),  # whole percents, ascending, e.g. [50, 80, 100]
    Column("action", String(16), nullable=False),  # notify | revoke
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

budget_periods = Table(
    "budget_periods",
    metadata,
    Column("customer_id", String(40), ForeignKey("customers.id"), primary_key=True),
    Column("period", String(7), primary_key=True),  # YYYY-MM in the customer's calendar
    Column("fired", JSON, nullable=False),  # thresholds that fired this period
    Column("projected_fired", Boolean, nullable=False, server_default=text("false")),
    # ok | warning | exceeded | revoke_pending | revoked | reinstated
    Column("state", String(16), nullable=False),
    Column("spent_usd", ExactAmount(), nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=False),
    Column("enforce_owner", String(80)),
    Column("enforce_until", UTCDateTime),
    Column("enforce_attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Index("ix_budget_periods_state", "state"),
)
