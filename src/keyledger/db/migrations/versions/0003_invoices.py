"""invoices: invoices, lines, usage claims, credit notes, number counters; immutability triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 00:15:00

Finalized invoices are immutable below the service layer: triggers (PostgreSQL: PL/pgSQL functions;
SQLite: ``RAISE(ABORT, …)``) refuse every UPDATE/DELETE of a non-draft invoice except the transitions
finalized -> paid | void (which may change only status, paid_at, voided_at, void_reason, updated_at),
every INSERT/UPDATE/DELETE of the lines or usage claims of a non-draft invoice (a void invoice's claims
may be deleted: voiding releases its usage), and every UPDATE/DELETE of a credit note.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EXACT = sa.Numeric(precision=28, scale=10).with_variant(sa.BigInteger(), "sqlite")
RECORD_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Columns of an invoice that never change once it is finalized.
FROZEN = (
    "id", "number", "customer_id", "period", "period_start", "period_end", "starts_at", "ends_at",
    "timezone", "currency", "plan_id", "plan_version_id", "plan_version", "exchange_rate", "tax_percent",
    "subtotal", "tax", "total", "provider_cost_usd", "customer_name", "customer_external_id",
    "customer_email", "issued_on", "due_on", "created_at", "finalized_at",
)

FINAL = "invoice is finalized: it cannot be changed (void it or issue a credit note)"
LINES = "invoice is finalized: its lines cannot be changed"
CREDIT = "credit notes cannot be changed or deleted"


def _tables() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("number", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("plan_id", sa.String(100), nullable=False),
        sa.Column("plan_version_id", sa.String(40), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("exchange_rate", EXACT, nullable=False),
        sa.Column("tax_percent", EXACT, nullable=False),
        sa.Column("subtotal", EXACT, nullable=False),
        sa.Column("tax", EXACT, nullable=False),
        sa.Column("total", EXACT, nullable=False),
        sa.Column("provider_cost_usd", EXACT, nullable=False),
        sa.Column("customer_name", sa.String(300), nullable=False),
        sa.Column("customer_external_id", sa.String(200), nullable=False),
        sa.Column("customer_email", sa.String(300), nullable=True),
        sa.Column("issued_on", sa.Date(), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'finalized', 'paid', 'void')", name=op.f("ck_invoices_status")),
        sa.CheckConstraint("status = 'draft' OR number IS NOT NULL", name=op.f("ck_invoices_numbered")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("number", name=op.f("uq_invoices_number")),
    )
    op.create_index(
        "uq_invoices_customer_period_live", "invoices", ["customer_id", "period"], unique=True,
        sqlite_where=sa.text("status <> 'void'"), postgresql_where=sa.text("status <> 'void'"),
    )
    op.create_index("ix_invoices_period", "invoices", ["period"])
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("line_item", sa.String(120), nullable=True),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.Column("quantity", EXACT, nullable=True),
        sa.Column("unit_price", EXACT, nullable=True),
        sa.Column("amount", EXACT, nullable=False),
        sa.Column("provider_cost_usd", EXACT, nullable=False),
        sa.Column("rate", sa.String(200), nullable=True),
        sa.Column("late_adjustment", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("late_period", sa.String(7), nullable=True),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("invoice_id", "position", name=op.f("pk_invoice_lines")),
    )
    op.create_table(
        "invoice_usage",
        sa.Column("usage_record_id", RECORD_ID, nullable=False),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("late", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_usage_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("usage_record_id", name=op.f("pk_invoice_usage")),
    )
    op.create_index("ix_invoice_usage_invoice", "invoice_usage", ["invoice_id"])
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("number", sa.String(40), nullable=False),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal", EXACT, nullable=False),
        sa.Column("tax", EXACT, nullable=False),
        sa.Column("total", EXACT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("number", name=op.f("uq_credit_notes_number")),
    )
    op.create_index("ix_credit_notes_invoice", "credit_notes", ["invoice_id"])
    op.create_table(
        "number_counters",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_number_counters")),
    )


def _postgresql_triggers() -> None:
    frozen_old = ", ".join(f"OLD.{c}" for c in FROZEN)
    frozen_new = ", ".join(f"NEW.{c}" for c in FROZEN)
    op.execute(f"""
CREATE FUNCTION kl_invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.status <> 'draft' THEN
      RAISE EXCEPTION 'invoice % is %: it cannot be deleted', OLD.id, OLD.status USING ERRCODE = 'P0001';
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.status = 'draft' THEN
    IF NEW.status NOT IN ('draft', 'finalized') THEN
      RAISE EXCEPTION 'invoice %: a draft can only be finalized', OLD.id USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
  END IF;
  IF OLD.status = 'finalized' AND NEW.status IN ('paid', 'void')
     AND ROW({frozen_old}) IS NOT DISTINCT FROM ROW({frozen_new}) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '{FINAL} (invoice %, %)', OLD.id, OLD.status USING ERRCODE = 'P0001';
END $$;
""")
    op.execute("""
CREATE TRIGGER kl_invoices_guard BEFORE UPDATE OR DELETE ON invoices
FOR EACH ROW EXECUTE FUNCTION kl_invoices_guard();
""")
    op.execute(f"""
CREATE FUNCTION kl_invoice_children_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_status text;
  new_status text;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    SELECT status INTO old_status FROM invoices WHERE id = OLD.invoice_id;
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    SELECT status INTO new_status FROM invoices WHERE id = NEW.invoice_id;
  END IF;
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'invoice_usage' AND old_status = 'void' THEN
    RETURN OLD;
  END IF;
  IF COALESCE(old_status, 'draft') <> 'draft' OR COALESCE(new_status, 'draft') <> 'draft' THEN
    RAISE EXCEPTION '{LINES} (%)', TG_TABLE_NAME USING ERRCODE = 'P0001';
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$;
""")
    for table in ("invoice_lines", "invoice_usage"):
        op.execute(f"""
CREATE TRIGGER kl_{table}_guard BEFORE INSERT OR UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION kl_invoice_children_guard();
""")
    op.execute(f"""
CREATE FUNCTION kl_credit_notes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '{CREDIT}' USING ERRCODE = 'P0001';
END $$;
""")
    op.execute("""
CREATE TRIGGER kl_credit_notes_guard BEFORE UPDATE OR DELETE ON credit_notes
FOR EACH ROW EXECUTE FUNCTION kl_credit_notes_guard();
""")


def _sqlite_triggers() -> None:
    same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in FROZEN)
    status_of = "(SELECT status FROM invoices WHERE id = {}.invoice_id)"
    statements = [
        f"""CREATE TRIGGER kl_invoices_no_update BEFORE UPDATE ON invoices
WHEN (OLD.status = 'draft' AND NEW.status NOT IN ('draft', 'finalized'))
  OR (OLD.status <> 'draft' AND NOT (OLD.status = 'finalized' AND NEW.status IN ('paid', 'void') AND {same}))
BEGIN SELECT RAISE(ABORT, '{FINAL}'); END""",
        f"""CREATE TRIGGER kl_invoices_no_delete BEFORE DELETE ON invoices
WHEN OLD.status <> 'draft'
BEGIN SELECT RAISE(ABORT, '{FINAL}'); END""",
    ]
    for table in ("invoice_lines", "invoice_usage"):
        statements += [
            f"""CREATE TRIGGER kl_{table}_no_insert BEFORE INSERT ON {table}
WHEN {status_of.format('NEW')} <> 'draft'
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
            f"""CREATE TRIGGER kl_{table}_no_update BEFORE UPDATE ON {table}
WHEN {status_of.format('OLD')} <> 'draft' OR {status_of.format('NEW')} <> 'draft'
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
        ]
    statements += [
        f"""CREATE TRIGGER kl_invoice_lines_no_delete BEFORE DELETE ON invoice_lines
WHEN {status_of.format('OLD')} <> 'draft'
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
        f"""CREATE TRIGGER kl_invoice_usage_no_delete BEFORE DELETE ON invoice_usage
WHEN {status_of.format('OLD')} NOT IN ('draft', 'void')
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
        f"""CREATE TRIGGER kl_credit_notes_no_update BEFORE UPDATE ON credit_notes
BEGIN SELECT RAISE(ABORT, '{CREDIT}'); END""",
        f"""CREATE TRIGGER kl_credit_notes_no_delete BEFORE DELETE ON credit_notes
BEGIN SELECT RAISE(ABORT, '{CREDIT}'); END""",
    ]
    for statement in statements:
        op.execute(statement)


SQLITE_TRIGGERS = (
    "kl_invoices_no_update", "kl_invoices_no_delete",
    "kl_invoice_lines_no_insert", "kl_invoice_lines_no_update", "kl_invoice_lines_no_delete",
    "kl_invoice_usage_no_insert", "kl_invoice_usage_no_update", "kl_invoice_usage_no_delete",
    "kl_credit_notes_no_update", "kl_credit_notes_no_delete",
)


def upgrade() -> None:
    _tables()
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("invoices", "invoice_lines", "invoice_usage", "credit_notes"):
            op.execute(f"DROP TRIGGER IF EXISTS kl_{table}_guard ON {table}")
        for fn in ("kl_invoices_guard", "kl_invoice_children_guard", "kl_credit_notes_guard"):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("number_counters")
    op.drop_index("ix_credit_notes_invoice", table_name="credit_notes")
    op.drop_table("credit_notes")
    op.drop_index("ix_invoice_usage_invoice", table_name="invoice_usage")
    op.drop_table("invoice_usage")
    op.drop_table("invoice_lines")
    op.drop_index("ix_invoices_period", table_name="invoices")
    op.drop_index("uq_invoices_customer_period_live", table_name="invoices")
    op.drop_table("invoices")
