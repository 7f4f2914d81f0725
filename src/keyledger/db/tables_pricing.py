"""Tables for pricing: plans and their versions (owned by ``keyledger.pricing``).

A plan version is immutable once written: importing a changed plan adds a version effective from its
``effective_from`` date; the version in effect for a period is the one with the latest
``effective_from`` on or before the period's start (the highest version number among equal dates).
The validated definition is kept as JSON with every number as a decimal string (never a float), next
to the source text it came from.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Date, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from keyledger.db.metadata import UTCDateTime, metadata

plans = Table(
    "plans",
    metadata,
    Column("id", String(100), primary_key=True),  # the plan file's id, e.g. growth
    Column("created_at", UTCDateTime, nullable=False),
)

plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", String(40), primary_key=True),  # plv_…
    Column("plan_id", String(100), ForeignKey("plans.id"), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, … per plan, in import order
    Column("effective_from", Date, nullable=False),
    Column("name", String(300), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("definition", JSON, nullable=False),  # Plan.to_dict(): decimals as strings
    Column("content_hash", String(64), nullable=False),  # sha256 of the definition without effective_from
    Column("source", Text, nullable=False),  # the file's text, as imported
    Column("source_name", String(500), nullable=False),
    Column("source_format", String(8), nullable=False),  # yaml | toml
    Column("imported_at", UTCDateTime, nullable=False),
    UniqueConstraint("plan_id", "version"),
    Index("ix_plan_versions_plan_effective", "plan_id", "effective_from"),
)
