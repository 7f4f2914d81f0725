"""invoices (PostgreSQL): the insert guard of invoice lines and usage claims checks once per statement

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-27 03:45:00

A branch off 0003 (like 0004, 0005 and 0006); ``migrate.upgrade`` applies every head.

0003's row-level guard ran a PL/pgSQL function and an invoice lookup for every inserted row, which was
most of an invoice run's claim (one row per usage record). Inserts are now checked by one
statement-level trigger over the statement's transition table (``REFERENCING NEW TABLE``): if any
inserted row belongs to an invoice that is not a draft, the statement fails with the same error and
inserts nothing. Updates and deletes keep 0003's row-level guard. SQLite has no statement-level
triggers: its row-level triggers stay.
"""

from alembic import op

revision = "0007"
down_revision = "0003"
branch_labels = ("invoice_guard",)
depends_on = None

LINES = "invoice is finalized: its lines cannot be changed"
TABLES = ("invoice_lines", "invoice_usage")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
CREATE FUNCTION kl_invoice_children_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM inserted JOIN invoices ON invoices.id = inserted.invoice_id
    WHERE invoices.status <> 'draft'
  ) THEN
    RAISE EXCEPTION '{LINES} (%)', TG_TABLE_NAME USING ERRCODE = 'P0001';
  END IF;
  RETURN NULL;
END $$;
""")
    for table in TABLES:
        op.execute(f"DROP TRIGGER kl_{table}_guard ON {table}")
        op.execute(f"""
CREATE TRIGGER kl_{table}_guard BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION kl_invoice_children_guard();
""")
        op.execute(f"""
CREATE TRIGGER kl_{table}_insert_guard AFTER INSERT ON {table}
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION kl_invoice_children_insert_guard();
""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS kl_{table}_insert_guard ON {table}")
        op.execute(f"DROP TRIGGER kl_{table}_guard ON {table}")
        op.execute(f"""
CREATE TRIGGER kl_{table}_guard BEFORE INSERT OR UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION kl_invoice_children_guard();
""")
    op.execute("DROP FUNCTION IF EXISTS kl_invoice_children_insert_guard()")
