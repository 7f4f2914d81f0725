"""Tables for invoices (owned by ``keyledger.invoices``): invoices, their lines, the usage records each
invoice bills, credit notes and the number counters.

Immutability is enforced *below* the service layer by triggers (migration 0003, SQLite and
PostgreSQL): once an invoice leaves ``draft`` its row may only move ``finalized -> paid | void``
(changing nothing but ``status``, ``paid_at``, ``voided_at``, ``void_reason``, ``updated_at``); its
lines and usage claims cannot be inserted, updated or deleted (a void invoice's claims may be
deleted, releasing its usage); credit notes are never updated or deleted.

Amounts use :class:`~keyledger.db.metadata.ExactAmount` (NUMERIC on PostgreSQL, scaled integers on
SQLite), so sums stay exact on both.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)

from keyledger.db.metadata import ExactAmount, UTCDateTime, metadata

INVOICE_STATUSES = ("draft", "finalized", "paid", "void")

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(40), primary_key=True),  # inv_…
    Column("number", String(40), unique=True),  # set when finalized: INV-2026-000001
    Column("status", String(16), nullable=False),  # draft | finalized | paid | void
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("period", String(7), nullable=False),  # YYYY-MM in the customer's calendar
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),  # exclusive
    Column("starts_at", UTCDateTime, nullable=False),  # the local period start, as a UTC instant
    Column("ends_at", UTCDateTime, nullable=False),  # exclusive
    Column("timezone", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("plan_id", String(100), nullable=False),
    Column("plan_version_id", String(40), nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("exchange_rate", ExactAmount(), nullable=False),
    Column("tax_percent", ExactAmount(), nullable=False),
    Column("subtotal", ExactAmount(), nullable=False),
    Column("tax", ExactAmount(), nullable=False),
    Column("total", ExactAmount(), nullable=False),
    Column("provider_cost_usd", ExactAmount(), nullable=False),
    Column("customer_name", String(300), nullable=False),
    Column("customer_external_id", String(200), nullable=False),
    Column("customer_email", String(300)),
    Column("issued_on", Date),
    Column("due_on", Date),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finalized_at", UTCDateTime),
    Column("paid_at", UTCDateTime),
    Column("voided_at", UTCDateTime),
    Column("void_reason", Text),
    CheckConstraint("status IN ('draft', 'finalized', 'paid', 'void')", name="status"),
    CheckConstraint("status = 'draft' OR number IS NOT NULL", name="numbered"),
    # One live invoice per customer and period (a void one may be replaced).
    Index(
        "uq_invoices_customer_period_live", "customer_id", "period", unique=True,
        sqlite_where=text("status <> 'void'"), postgresql_where=text("status <> 'void'"),
    ),
    Index("ix_invoices_period", "period"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", String(40), ForeignKey("invoices.id"), primary_key=True),
    Column("position", Integer, primary_key=True),  # 1, 2, … as shown
    Column("kind", String(16), nullable=False),  # usage | included | byo | base_fee | minimum
    Column("description", Text, nullable=False),
    Column("line_item", String(120)),
    Column("unit", String(32)),
    Column("quantity", ExactAmount()),
    Column("unit_price", ExactAmount()),
    Column("amount", ExactAmount(), nullable=False),
    Column("provider_cost_usd", ExactAmount(), nullable=False),
    Column("rate", String(200)),
    Column("late_adjustment", Boolean, nullable=False, server_default=text("false")),
    Column("late_period", String(7)),  # the earlier period a late adjustment belongs to
)

# Which usage records an invoice bills: rectangles (migration 0008; docs/invoices.md, "claims"). A claim
# bills the records of ``customer_id`` created in [created_lo, created_hi) with id_after < id <= id_upto.
# Usage records are never updated or deleted and every id <= id_upto was committed when the claim was
# written, so a claim's records (``records`` of them) are fixed forever. No two claims of a
# customer overlap: runs write them under the customer's row lock, from the gaps the customer's existing
# claims leave (store.claim_windows).
RECORD_ID = BigInteger().with_variant(Integer, "sqlite")
invoice_claims = Table(
    "invoice_claims",
    metadata,
    Column("id", RECORD_ID, primary_key=True, autoincrement=True),
    Column("invoice_id", String(40), ForeignKey("invoices.id"), nullable=False),
    Column("customer_id", String(40), nullable=False),
    Column("created_lo", UTCDateTime, nullable=False),
    Column("created_hi", UTCDateTime, nullable=False),  # exclusive
    Column("id_after", RECORD_ID, nullable=False),  # exclusive
    Column("id_upto", RECORD_ID, nullable=False),  # inclusive
    Column("late", Boolean, nullable=False, server_default=text("false")),
    Column("records", Integer, nullable=False),
    CheckConstraint("created_lo < created_hi AND id_after < id_upto AND records >= 0", name="rectangle"),
    Index("ix_invoice_claims_invoice", "invoice_id"),
    Index("ix_invoice_claims_customer_created", "customer_id", "created_lo"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", String(40), primary_key=True),  # crn_…
    Column("number", String(40), nullable=False, unique=True),  # CN-2026-000001
    Column("invoice_id", String(40), ForeignKey("invoices.id"), nullable=False),
    Column("customer_id", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", ExactAmount(), nullable=False),
    Column("tax", ExactAmount(), nullable=False),
    Column("total", ExactAmount(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("lines", JSON, nullable=False),  # [{position, description, amount}] or [] for an amount credit
    Column("issued_at", UTCDateTime, nullable=False),
    Index("ix_credit_notes_invoice", "invoice_id"),
)

# Gapless sequences: one row per prefix and year, incremented inside the finalizing transaction.
number_counters = Table(
    "number_counters",
    metadata,
    Column("name", String(60), primary_key=True),  # e.g. INV-2026
    Column("value", Integer, nullable=False),
)
