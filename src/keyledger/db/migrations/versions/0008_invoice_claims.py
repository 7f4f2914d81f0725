"""invoices: usage claims are rectangles (invoice_claims) instead of one invoice_usage row per record

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 06:00:00

A claim bills the records of one customer created in [created_lo, created_hi) with
id_after < id <= id_upto (docs/invoices.md, "Which usage an invoice bills: claims"). The existing
invoice_usage rows become rectangles that bill exactly the same records (``_convert_claims``: a
customer's records billed one after the other by the same invoice become one rectangle; a record of an
instant shared with records of other invoices gets its own [created, created + 1 us) x (id - 1, id]).
Then invoice_usage is dropped (nothing reads it any more; keeping a second, stale copy of the claims
would only invite readers of the wrong one).

The immutability guards cover invoice_claims as 0003/0007 covered invoice_usage: no insert, update or
delete of a non-draft invoice's claims, except deleting a void invoice's claims. PostgreSQL checks
inserts once per statement (0007's function), updates and deletes per row (0003's function, now also
naming invoice_claims); SQLite: row-level triggers.

Downgrade recreates invoice_usage with one row per record a claim covers, and 0007's / 0003's guards.
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RECORD_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LINES = "invoice is finalized: its lines cannot be changed"
PAGE = 10_000
US = timedelta(microseconds=1)
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # before any usage record
END = datetime(9999, 1, 1, tzinfo=UTC)  # after any usage record
MIXED = ("mixed",)
CLAIMS = sa.table(
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
            "created_lo < created_hi AND id_after < id_upto AND records >= 0",
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
    """invoice_usage rows -> rectangles, before the guards exist (finalized invoices' claims too).

    Per customer, its records with ids up to M (the largest id now; every id up to it is committed:
    PostgreSQL takes the same SHARE lock as a run) in (created, id) order are cut into runs of records
    billed by the same invoice (and late flag). A run becomes one rectangle (0, M] x [from, to), where
    the time range reaches out to the neighbouring runs' records (to the ends of time for the first and
    last run), so that it holds no record but the run's: a customer whose records are all billed ends up
    with its whole time line covered up to M, and a later run's gap in any window is (M, hw] — one
    rectangle shared by every customer. A record no invoice bills stays a hole ([created, +1 us) x all
    ids), and records of one instant billed by different invoices each get their own rectangle
    [created, +1 us) x (id - 1, id]."""
    db = op.get_bind()
    if db.dialect.name == "postgresql":
        db.exec_driver_sql("LOCK TABLE usage_records IN SHARE MODE")
    top = db.execute(sa.text("SELECT max(id) FROM usage_records")).scalar()
    if top is None:
        return
    customers = (
        db.execute(
            sa.text(
                "SELECT DISTINCT u.customer_id FROM invoice_usage c JOIN usage_records u "
                "ON u.id = c.usage_record_id ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    rows: list[dict] = []
    for customer in customers:
        rows += _rectangles(db, customer, int(top))
        if len(rows) >= PAGE:
            _insert(db, rows)
            rows = []
    _insert(db, rows)


def _insert(db, rows: list[dict]) -> None:
    if rows:
        db.execute(sa.insert(CLAIMS), rows)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _rectangles(db, customer: str, top: int) -> list[dict]:
    records = sa.table(
        "usage_records",
        sa.column("id", RECORD_ID),
        sa.column("customer_id", sa.String),
        sa.column("created", sa.DateTime(timezone=True)),
    )
    old = sa.table(
        "invoice_usage",
        sa.column("usage_record_id", RECORD_ID),
        sa.column("invoice_id", sa.String),
        sa.column("late", sa.Boolean),
    )
    listed = db.execute(
        sa.select(records.c.id, records.c.created, old.c.invoice_id, old.c.late)
        .select_from(records.outerjoin(old, old.c.usage_record_id == records.c.id))
        .where(records.c.customer_id == customer, records.c.id <= top)
        .order_by(records.c.created, records.c.id)
    ).all()
    instants: list[tuple[datetime, list[tuple[int, tuple | None]]]] = []
    for r in listed:
        at = _utc(r.created)
        label = None if r.invoice_id is None else (r.invoice_id, bool(r.late))
        if instants and instants[-1][0] == at:
            instants[-1][1].append((int(r.id), label))
        else:
            instants.append((at, [(int(r.id), label)]))
    out: list[dict] = []

    def claim(label: tuple, lo: datetime, hi: datetime, after: int, upto: int, n: int) -> None:
        out.append(
            {
                "invoice_id": label[0],
                "customer_id": customer,
                "created_lo": lo,
                "created_hi": hi,
                "id_after": after,
                "id_upto": upto,
                "late": label[1],
                "records": n,
            }
        )

    run: tuple | None = None  # the open run's label
    start, count = BEGINNING, 0
    for at, group in instants:
        labels = {label for _, label in group}
        label = labels.pop() if len(labels) == 1 else MIXED
        if run is not None and label != run:
            claim(run, start, at, 0, top, count)
            run, start = None, at
        if label is None or label is MIXED:  # a hole (unbilled) or an instant billed by several
            for rid, own in group:
                if own is not None:
                    claim(own, at, at + US, rid - 1, rid, 1)
            start = at + US
            continue
        if run is None:
            run, count = label, 0
        count += len(group)
    if run is not None:
        claim(run, start, END, 0, top, count)
    return out


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
