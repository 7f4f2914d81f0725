"""invoices: usage claims are rectangles (invoice_claims) instead of one invoice_usage row per record

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 06:00:00

A claim bills the records of one customer created in [created_lo, created_hi) with
id_after < id <= id_upto (docs/invoices.md, "Which usage an invoice bills: claims"). Every existing
invoice_usage row becomes the rectangle of exactly its record: [created, created + 1 microsecond) x
(id - 1, id], same invoice and late flag, records = 1. Then invoice_usage is dropped (nothing reads it
any more; keeping a second, stale copy of the claims would only invite readers of the wrong one).

The immutability guards cover invoice_claims as 0003/0007 covered invoice_usage: no insert, update or
delete of a non-draft invoice's claims, except deleting a void invoice's claims. PostgreSQL checks
inserts once per statement (0007's function), updates and deletes per row (0003's function, now also
naming invoice_claims); SQLite: row-level triggers.

Downgrade recreates invoice_usage with one row per record a claim covers, and 0007's / 0003's guards.
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RECORD_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LINES = "invoice is finalized: its lines cannot be changed"
PAGE = 10_000


def _guard_function(releasable: str) -> str:
    """0003's row-level guard; ``releasable``: the claim tables whose rows a void invoice may delete."""
    return f"""
CREATE OR REPLACE FUNCTION kl_invoice_children_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ({releasable}) AND old_status = 'void' THEN
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
"""


def _guards(table: str) -> None:
    """The guards of a claim table (a void invoice's claims may be deleted)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
CREATE TRIGGER kl_{table}_guard BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION kl_invoice_children_guard();
""")
        op.execute(f"""
CREATE TRIGGER kl_{table}_insert_guard AFTER INSERT ON {table}
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION kl_invoice_children_insert_guard();
""")
        return
    status_of = "(SELECT status FROM invoices WHERE id = {}.invoice_id)"
    for statement in (
        f"""CREATE TRIGGER kl_{table}_no_insert BEFORE INSERT ON {table}
WHEN {status_of.format("NEW")} <> 'draft'
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
        f"""CREATE TRIGGER kl_{table}_no_update BEFORE UPDATE ON {table}
WHEN {status_of.format("OLD")} <> 'draft' OR {status_of.format("NEW")} <> 'draft'
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
        f"""CREATE TRIGGER kl_{table}_no_delete BEFORE DELETE ON {table}
WHEN {status_of.format("OLD")} NOT IN ('draft', 'void')
BEGIN SELECT RAISE(ABORT, '{LINES}'); END""",
    ):
        op.execute(statement)


def _drop_guards(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS kl_{table}_insert_guard ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS kl_{table}_guard ON {table}")
    else:
        for what in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS kl_{table}_no_{what}")


def upgrade() -> None:
    op.create_table(
        "invoice_claims",
        sa.Column("id", RECORD_ID, nullable=False, autoincrement=True),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("created_lo", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_hi", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id_after", RECORD_ID, nullable=False),
        sa.Column("id_upto", RECORD_ID, nullable=False),
        sa.Column("late", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "created_lo < created_hi AND id_after < id_upto AND records > 0",
            name=op.f("ck_invoice_claims_rectangle"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_claims_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_claims")),
    )
    op.create_index("ix_invoice_claims_invoice", "invoice_claims", ["invoice_id"])
    op.create_index("ix_invoice_claims_customer_created", "invoice_claims", ["customer_id", "created_lo"])
    _convert_claims()
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(_guard_function("'invoice_usage', 'invoice_claims'"))
    _guards("invoice_claims")
    _drop_guards("invoice_usage")
    op.drop_index("ix_invoice_usage_invoice", table_name="invoice_usage")
    op.drop_table("invoice_usage")
    if postgresql:
        op.execute(_guard_function("'invoice_claims'"))


def _convert_claims() -> None:
    """One rectangle per invoice_usage row (before the guards exist: finalized invoices' claims too), a
    page at a time; the timestamps go through SQLAlchemy's type, as the application stores them."""
    db = op.get_bind()
    old = sa.table(
        "invoice_usage",
        sa.column("usage_record_id", RECORD_ID),
        sa.column("invoice_id", sa.String),
        sa.column("late", sa.Boolean),
    )
    records = sa.table(
        "usage_records",
        sa.column("id", RECORD_ID),
        sa.column("customer_id", sa.String),
        sa.column("created", sa.DateTime(timezone=True)),
    )
    claims = sa.table(
        "invoice_claims",
        sa.column("invoice_id", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("created_lo", sa.DateTime(timezone=True)),
        sa.column("created_hi", sa.DateTime(timezone=True)),
        sa.column("id_after", RECORD_ID),
        sa.column("id_upto", RECORD_ID),
        sa.column("late", sa.Boolean),
        sa.column("records", sa.Integer),
    )
    after = 0
    while True:
        page = db.execute(
            sa.select(
                old.c.usage_record_id, old.c.invoice_id, old.c.late, records.c.customer_id, records.c.created
            )
            .select_from(old.join(records, records.c.id == old.c.usage_record_id))
            .where(old.c.usage_record_id > after)
            .order_by(old.c.usage_record_id)
            .limit(PAGE)
        ).all()
        if not page:
            return
        db.execute(
            sa.insert(claims),
            [
                {
                    "invoice_id": r.invoice_id,
                    "customer_id": r.customer_id,
                    "created_lo": r.created,
                    "created_hi": r.created + timedelta(microseconds=1),
                    "id_after": r.usage_record_id - 1,
                    "id_upto": r.usage_record_id,
                    "late": bool(r.late),
                    "records": 1,
                }
                for r in page
            ],
        )
        after = page[-1].usage_record_id


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "invoice_usage",
        sa.Column("usage_record_id", RECORD_ID, nullable=False),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("late", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_usage_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("usage_record_id", name=op.f("pk_invoice_usage")),
    )
    op.create_index("ix_invoice_usage_invoice", "invoice_usage", ["invoice_id"])
    op.execute("""
INSERT INTO invoice_usage (usage_record_id, invoice_id, late)
SELECT u.id, c.invoice_id, c.late FROM invoice_claims c JOIN usage_records u
  ON u.customer_id = c.customer_id AND u.created >= c.created_lo AND u.created < c.created_hi
 AND u.id > c.id_after AND u.id <= c.id_upto
""")
    if postgresql:
        op.execute(_guard_function("'invoice_usage', 'invoice_claims'"))
    _guards("invoice_usage")
    _drop_guards("invoice_claims")
    op.drop_index("ix_invoice_claims_customer_created", table_name="invoice_claims")
    op.drop_index("ix_invoice_claims_invoice", table_name="invoice_claims")
    op.drop_table("invoice_claims")
    if postgresql:
        op.execute(_guard_function("'invoice_usage'"))
