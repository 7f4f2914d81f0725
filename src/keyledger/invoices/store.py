"""SQL for invoices, their lines, usage claims, credit notes and number counters (SQLAlchemy Core).

Every function takes an open connection; the caller (``service``) owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from keyledger.customers.model import Customer
from keyledger.db.bulk import write_rows
from keyledger.db.tables_customers import audit_log, connections, customers
from keyledger.db.tables_invoices import (
    credit_notes,
    invoice_claims,
    invoice_lines,
    invoices,
    number_counters,
)
from keyledger.db.tables_usage import usage_records
from keyledger.invoices.calc import Line
from keyledger.invoices.model import Rect, claim_gaps
from keyledger.pricing.model import UsageLine
from keyledger.pricing.rates import EXACT

LIVE = ("draft", "finalized", "paid")
ISSUED = ("finalized", "paid")

# Redundant with ``status IN LIVE/ISSUED``, but written as the literal predicate of the partial index
# uq_invoices_customer_period_live (customer_id, period) WHERE status <> 'void': SQLite (and PostgreSQL
# with a generic plan) only use a partial index when the query states its predicate, otherwise a
# customer's lookup scans every invoice of the period (quadratic in customers for a run).
_NOT_VOID = invoices.c.status != literal_column("'void'")

# ---------------------------------------------------------------------------- invoices


def get_invoice(db: Connection, ref: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """By id or number (``ref`` may be either)."""
    q = select(invoices).where(or_(invoices.c.id == ref, invoices.c.number == ref))
    if for_update:
        q = q.with_for_update()
    row = db.execute(q).mappings().first()
    return dict(row) if row else None


def live_invoice(db: Connection, customer_id: str, period: str) -> dict[str, Any] | None:
    row = (
        db.execute(
            select(invoices)
            .where(
                invoices.c.customer_id == customer_id,
                invoices.c.period == period,
                invoices.c.status.in_(LIVE),
                _NOT_VOID,
            )
            .with_for_update()
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def lock_customers(db: Connection, customer_ids: list[str]) -> dict[str, Customer]:
    """The customers, locked (PostgreSQL ``FOR UPDATE``) in id order so concurrent runs never deadlock."""
    rows = db.execute(
        select(customers).where(customers.c.id.in_(customer_ids)).order_by(customers.c.id).with_for_update()
    )
    return {r.id: Customer.from_row(r) for r in rows}


def live_invoices(db: Connection, customer_ids: list[str], period: str) -> dict[str, dict[str, Any]]:
    """The live invoice of ``period`` for each of the customers that has one, locked (by customer)."""
    rows = db.execute(
        select(invoices)
        .where(
            invoices.c.customer_id.in_(customer_ids),
            invoices.c.period == period,
            invoices.c.status.in_(LIVE),
            _NOT_VOID,
        )
        .order_by(invoices.c.id)
        .with_for_update()
    ).mappings()
    return {r["customer_id"]: dict(r) for r in rows}


def issued_before_many(
    db: Connection, customer_ids: list[str], period: str
) -> dict[str, list[dict[str, Any]]]:
    """Each customer's finalized or paid invoices of periods before ``period``, oldest first (id,
    period, bounds and plan version)."""
    rows = db.execute(
        select(
            invoices.c.id, invoices.c.customer_id, invoices.c.period, invoices.c.starts_at,
            invoices.c.ends_at, invoices.c.plan_version_id,
        )
        .where(
            invoices.c.customer_id.in_(customer_ids),
            invoices.c.period < period,
            invoices.c.status.in_(ISSUED),
            _NOT_VOID,
        )
        .order_by(invoices.c.customer_id, invoices.c.period)
    ).mappings()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["customer_id"], []).append(dict(r))
    return out


def list_invoices(
    db: Connection, *, period: str | None = None, customer_id: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    q = select(invoices).order_by(
        invoices.c.period, invoices.c.customer_name, invoices.c.created_at, invoices.c.id
    )
    if period:
        q = q.where(invoices.c.period == period)
    if customer_id:
        q = q.where(invoices.c.customer_id == customer_id)
    if status:
        q = q.where(invoices.c.status == status)
    return [dict(r) for r in db.execute(q).mappings()]


def insert_invoice(db: Connection, values: dict[str, Any]) -> None:
    db.execute(insert(invoices).values(**values))


def insert_invoices(db: Connection, rows: list[dict[str, Any]]) -> None:
    _insert_many(db, invoices, rows)


def _insert_many(db: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rows (every one with the same keys) in one statement (:func:`keyledger.db.bulk.write_rows`)."""
    if rows:
        cols = list(rows[0])
        write_rows(db, table, cols, [[row[name] for name in cols] for row in rows])


def update_invoice(db: Connection, invoice_id: str, values: dict[str, Any]) -> None:
    db.execute(update(invoices).where(invoices.c.id == invoice_id).values(**values))


def update_invoices(db: Connection, rows: list[dict[str, Any]]) -> None:
    """One executemany UPDATE: each row's ``id`` picks the invoice, its other keys are the new values
    (every row has the same keys)."""
    if not rows:
        return
    cols = [k for k in rows[0] if k != "id"]
    stmt = (
        update(invoices)
        .where(invoices.c.id == bindparam("_id"))
        .values({k: bindparam(f"_{k}") for k in cols})
    )
    db.execute(stmt, [{f"_{k}": v for k, v in r.items()} for r in rows])


def write_audits(db: Connection, rows: list[dict[str, Any]]) -> None:
    """Audit entries (``id, at, actor, action, subject, details``) in one executemany."""
    _insert_many(db, audit_log, rows)


#: PostgreSQL ``work_mem`` for a run's transactions: summing a month of usage per customer and line item
#: (10k customers x 5 line items: ~60 MB of hash table) spilled to disk in batches under the 4 MB default.
#: Per sort or hash node and worker, for that transaction only.
PG_RUN_WORK_MEM = "64MB"
#: PostgreSQL ``parallel_tuple_cost`` for a run's transactions (see :func:`run_tuning`).
PG_RUN_PARALLEL_TUPLE_COST = "0.001"
#: SQLite page cache of a run's transactions, KiB (the connection's default is 2 MiB).
SQLITE_RUN_CACHE_KIB = 65536


@contextmanager
def run_tuning(db: Connection) -> Iterator[None]:
    """Session settings for a run's transaction.

    SQLite: a page cache of :data:`SQLITE_RUN_CACHE_KIB` (64 MiB; the default is 2 MiB) while a run
    reads and claims the month's usage, which touches every page of it; the connection's own size is
    restored after, so the memory is given back. (The WAL checkpoints the batches' commits trigger are
    most of their commit time, ~1.2 s of a 10k-customer run; one checkpoint at the end of the run
    instead cost as much: it is the disk's work.)

    PostgreSQL (``SET LOCAL``, this transaction only): ``work_mem`` :data:`PG_RUN_WORK_MEM`, so the
    window's GROUP BY hashes in memory; no JIT, whose compilation (0.1-0.2 s) costs more than it saves
    on these queries; and a ``parallel_tuple_cost`` of :data:`PG_RUN_PARALLEL_TUPLE_COST`: at the
    default 0.1 the planner prices passing the window's ~100k partial groups from the workers above the
    scan they share, and sums a month serially (1.12-1.18 s for 1M records, against 0.86-0.90 s on two
    workers)."""
    if db.dialect.name == "postgresql":
        db.exec_driver_sql(f"SET LOCAL work_mem = '{PG_RUN_WORK_MEM}'")
        db.exec_driver_sql("SET LOCAL jit = off")
        db.exec_driver_sql(f"SET LOCAL parallel_tuple_cost = {PG_RUN_PARALLEL_TUPLE_COST}")
        yield
        return
    if db.dialect.name != "sqlite":
        yield
        return
    before = int(db.exec_driver_sql("PRAGMA cache_size").scalar_one())
    db.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_RUN_CACHE_KIB}")
    try:
        yield
    finally:
        db.exec_driver_sql(f"PRAGMA cache_size={before}")


# ---------------------------------------------------------------------------- lines


def replace_lines(db: Connection, invoice_id: str, lines: list[Line]) -> None:
    delete_lines(db, [invoice_id])
    insert_lines(db, {invoice_id: lines})


def delete_lines(db: Connection, invoice_ids: list[str]) -> None:
    if invoice_ids:
        db.execute(delete(invoice_lines).where(invoice_lines.c.invoice_id.in_(invoice_ids)))


_LINE_COLUMNS = [
    "invoice_id", "position", "kind", "description", "line_item", "unit", "quantity", "unit_price",
    "amount", "provider_cost_usd", "rate", "late_adjustment", "late_period",
]


def insert_lines(db: Connection, lines_by_invoice: dict[str, list[Line]]) -> None:
    """Every invoice's lines (positions 1, 2, … in list order) in one statement
    (:func:`~keyledger.db.bulk.write_rows`; the insert guard on PostgreSQL fires as for an INSERT)."""
    rows = [
        [
            invoice_id, i, line.kind, line.description, line.line_item, line.unit, line.quantity,
            line.unit_price, line.amount, line.provider_cost_usd, line.rate, bool(line.late_adjustment),
            line.late_period,
        ]
        for invoice_id, lines in lines_by_invoice.items()
        for i, line in enumerate(lines, start=1)
    ]
    write_rows(db, invoice_lines, _LINE_COLUMNS, rows)


def lines_of(db: Connection, invoice_id: str) -> list[Line]:
    rows = db.execute(
        select(invoice_lines)
        .where(invoice_lines.c.invoice_id == invoice_id)
        .order_by(invoice_lines.c.position)
    ).mappings()
    return [
        Line(
            kind=r["kind"],
            description=r["description"],
            line_item=r["line_item"],
            unit=r["unit"],
            quantity=r["quantity"],
            unit_price=r["unit_price"],
            amount=r["amount"],
            provider_cost_usd=r["provider_cost_usd"],
            rate=r["rate"],
            late_adjustment=bool(r["late_adjustment"]),
            late_period=r["late_period"],
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------- usage claims

ur = usage_records.c
ic = invoice_claims.c


def _in_range(lo: datetime, hi: datetime) -> tuple:
    """created in [lo, hi). The UTC-day bounds (``day`` is the UTC date of ``created``) let the
    (customer_id, day) index narrow the scan, and the days wholly inside [lo, hi) are decided from the
    index alone: only records of the edge days need their row read to compare ``created`` (SQLite defers
    that read until the OR needs it), which makes a month's claim several times cheaper."""
    lo_utc, hi_utc = lo.astimezone(UTC), hi.astimezone(UTC)
    first, last = lo_utc.date(), hi_utc.date()
    whole_from = first if lo_utc.time() == time(0) else first + timedelta(days=1)
    whole_to = last - timedelta(days=1)
    inside = and_(ur.created >= lo, ur.created < hi)
    if whole_from <= whole_to:
        inside = or_(and_(ur.day >= whole_from, ur.day <= whole_to), inside)
    return (ur.day >= first, ur.day <= last, inside)


def high_water(db: Connection) -> int:
    """The highest usage record id such that every record with an id up to it is committed (0: none).

    Call it in its own short transaction. SQLite has one writer at a time: the largest id is committed.
    PostgreSQL allocates ids (a sequence) before the inserting transaction commits, so a larger id can be
    visible while a smaller one is still in flight: ``LOCK TABLE … IN SHARE MODE`` waits for every
    transaction that has inserted usage to end (it conflicts with their ROW EXCLUSIVE lock) and holds new
    inserts back until this transaction ends, so the max read under it is committed with everything below
    it, and every later insert takes a larger id. A record committed later (id > the mark) is billed by a
    later run (as late usage once its period is issued)."""
    if db.dialect.name == "postgresql":
        db.exec_driver_sql("LOCK TABLE usage_records IN SHARE MODE")
    return int(db.execute(select(func.coalesce(func.max(ur.id), 0))).scalar_one())


def _rect_predicate():
    """A usage record inside a claim (joined on the claim's customer)."""
    return and_(
        ur.customer_id == ic.customer_id,
        ur.created >= ic.created_lo,
        ur.created < ic.created_hi,
        ur.id > ic.id_after,
        ur.id <= ic.id_upto,
    )


def release_claims(db: Connection, invoice_id: str) -> int:
    return release_claims_of(db, [invoice_id])


def release_claims_of(db: Connection, invoice_ids: list[str]) -> int:
    """Delete the invoices' claims; returns how many usage records they billed."""
    if not invoice_ids:
        return 0
    released = db.execute(
        select(func.coalesce(func.sum(ic.records), 0)).where(ic.invoice_id.in_(invoice_ids))
    ).scalar_one()
    db.execute(delete(invoice_claims).where(ic.invoice_id.in_(invoice_ids)))
    return int(released)


def claims_in(db: Connection, customer_ids: list[str], lo: datetime, hi: datetime) -> dict[str, list[Rect]]:
    """Each customer's claims (of any invoice) that overlap [lo, hi) in time."""
    out: dict[str, list[Rect]] = {}
    if not customer_ids:
        return out
    q = select(ic.customer_id, ic.created_lo, ic.created_hi, ic.id_after, ic.id_upto).where(
        ic.customer_id.in_(customer_ids), ic.created_lo < hi, ic.created_hi > lo
    )
    for r in db.execute(q):
        out.setdefault(r[0], []).append(Rect(r[1], r[2], int(r[3]), int(r[4])))
    return out


def claim_window(
    db: Connection,
    invoice_of: dict[str, str],
    lo: datetime,
    hi: datetime,
    hw: int,
    pending: list[dict[str, Any]],
    *,
    late: bool,
    presummed: dict[str, list[tuple]] | None = None,
) -> dict[str, list[UsageLine]]:
    """Claim for each customer (``invoice_of``: customer id -> invoice id) the records created in
    [lo, hi) with ids up to ``hw`` that no claim of the customer covers yet, and return what each
    invoice claimed, summed (line item, unit, BYO).

    The caller holds the customers' row locks (claims of a customer are only written under it), so the
    customer's existing claims cannot change meanwhile. Their gaps (:func:`claim_gaps`) are summed with
    one GROUP BY per distinct rectangle (the common case, no earlier claim: every customer of the window
    shares one rectangle, and the records are read once, as a plain GROUP BY would) and the non-empty
    rectangles — all of a customer's when its gaps are more than one rectangle, so that its window is
    whole up to ``hw`` again and later runs see one gap (empty ones are otherwise not stored: they would
    stay empty forever) — are appended to ``pending`` (rows for :func:`insert_claims`, which the
    caller writes once the drafts exist; the claims already pending count as existing) with their
    record counts. Every id
    <= ``hw`` is committed and records never change, so the sums read are exactly what the claims bill,
    now and later.

    ``presummed``: :func:`window_sums` of [lo, hi) x (0, hw] for (at least) these customers, computed
    once for the run; the customers whose gap is exactly that rectangle take their sums from it instead
    of a GROUP BY."""
    if not invoice_of or hw <= 0:
        return {}
    existing = claims_in(db, list(invoice_of), lo, hi)
    for row in pending:
        if row["customer_id"] in invoice_of and row["created_lo"] < hi and row["created_hi"] > lo:
            rect = Rect(row["created_lo"], row["created_hi"], row["id_after"], row["id_upto"])
            existing.setdefault(row["customer_id"], []).append(rect)
    shapes: dict[Rect, list[str]] = {}
    fragmented: set[str] = set()
    for cid in invoice_of:
        gaps = claim_gaps(lo, hi, hw, existing.get(cid, []))
        if len(gaps) > 1:
            fragmented.add(cid)
        for rect in gaps:
            shapes.setdefault(rect, []).append(cid)
    if not shapes:
        return {}
    byo = byo_connections(db)
    sums: dict[tuple[str, str, str, bool], tuple[Decimal, Decimal]] = {}
    rows: list[dict[str, Any]] = []
    whole = Rect(lo, hi, 0, hw)
    for rect in sorted(shapes):
        if presummed is not None and rect == whole:
            found: list[tuple] = [(cid, *r) for cid in shapes[rect] for r in presummed.get(cid, ())]
        else:
            found = list(db.execute(_window_sums_query(rect, byo).where(ur.customer_id.in_(shapes[rect]))))
        counts: dict[str, int] = {}
        for r in found:
            key = (invoice_of[r[0]], r[1], r[2], bool(r[3]))
            quantity, cost = sums.get(key, (Decimal(0), Decimal(0)))
            sums[key] = (EXACT.add(quantity, _dec(r[4])), EXACT.add(cost, _dec(r[5])))
            counts[r[0]] = counts.get(r[0], 0) + r[6]
        rows += [
            {"invoice_id": invoice_of[cid], "customer_id": cid, "created_lo": rect.lo, "created_hi": rect.hi,
             "id_after": rect.after, "id_upto": rect.upto, "late": late, "records": counts.get(cid, 0)}
            for cid in shapes[rect]
            if cid in counts or cid in fragmented
        ]
    pending += rows
    out: dict[str, list[UsageLine]] = {}
    for key in sorted(sums):
        out.setdefault(key[0], []).append(UsageLine(key[1], key[2], *sums[key], key[3]))
    return out


def byo_connections(db: Connection) -> list[str]:
    """Ids of the customers' own Deepgram connections (their usage is shown, not billed)."""
    return sorted(db.execute(select(connections.c.id).where(connections.c.kind == "byo")).scalars())


def _window_sums_query(rect: Rect, byo: list[str]):
    """Sums per customer, line item, unit and "on a BYO connection" (a flag, not the connection: a
    shorter key for the GROUP BY's sort, which is most of the query on SQLite)."""
    keys = [ur.customer_id, ur.line_item, ur.unit]
    if byo:
        flag = ur.connection_id.in_(byo).label("byo")
        group = [*keys, literal_column("byo")]
    else:
        flag, group = false().label("byo"), keys
    return (
        select(*keys, flag, func.sum(ur.quantity), func.sum(ur.cost_usd), func.count())
        .where(*_in_range(rect.lo, rect.hi), ur.id > rect.after, ur.id <= rect.upto)
        .group_by(*group)
    )


def window_sums(
    db: Connection, lo: datetime, hi: datetime, hw: int, customer_ids: set[str]
) -> dict[str, list[tuple]]:
    """The usage of [lo, hi) x (0, hw] of every customer, summed (line item, unit, BYO flag, quantity,
    cost, records) in one GROUP BY over the window — one read of the window's records, as the baseline
    makes — kept for ``customer_ids`` only. A run with many customers in one window computes it once
    instead of one GROUP BY per batch (each batch's customers' records are spread over the whole
    window, so per-batch reads touch most of its pages every time). Valid for the whole run: the
    rectangle's records are fixed (every id <= hw committed, records immutable)."""
    out: dict[str, list[tuple]] = {}
    if hw <= 0:
        return out
    for r in db.execute(_window_sums_query(Rect(lo, hi, 0, hw), byo_connections(db))).all():
        if r[0] in customer_ids:
            out.setdefault(r[0], []).append(tuple(r[1:]))
    return out


def insert_claims(db: Connection, rows: list[dict[str, Any]]) -> None:
    """Claim rows (from :func:`claim_window`) in one statement; their invoices must exist."""
    _insert_many(db, invoice_claims, rows)


def _byo():
    return case((connections.c.kind == "byo", 1), else_=0)


def _claimed_join():
    return usage_records.join(invoice_claims, _rect_predicate()).outerjoin(
        connections, connections.c.id == ur.connection_id
    )


def usage_by_invoice(db: Connection, invoice_ids: list[str], *, late: bool) -> dict[str, list[UsageLine]]:
    """:func:`claimed_usage` of many invoices in one GROUP BY (invoice, line item, unit, BYO), read back
    through their claims."""
    if not invoice_ids:
        return {}
    byo = _byo()
    q = (
        select(ic.invoice_id, ur.line_item, ur.unit, byo.label("byo"), func.sum(ur.quantity),
               func.sum(ur.cost_usd))
        .select_from(_claimed_join())
        .where(ic.invoice_id.in_(invoice_ids), ic.late == late)
        .group_by(ic.invoice_id, ur.line_item, ur.unit, byo)
        .order_by(ic.invoice_id, ur.line_item, ur.unit, byo)
    )
    out: dict[str, list[UsageLine]] = {}
    for r in db.execute(q):
        out.setdefault(r[0], []).append(UsageLine(r[1], r[2], _dec(r[4]), _dec(r[5]), bool(r[3])))
    return out


def with_late_claims(db: Connection, invoice_ids: list[str]) -> set[str]:
    """Those of the invoices that claim late usage (of earlier periods)."""
    if not invoice_ids:
        return set()
    q = (
        select(ic.invoice_id)
        .where(ic.invoice_id.in_(invoice_ids), ic.late.is_(True), ic.records > 0)
        .distinct()
    )
    return set(db.execute(q).scalars())


def _usage_sum(db: Connection, where) -> list[UsageLine]:
    byo = _byo()
    q = (
        select(ur.line_item, ur.unit, byo.label("byo"), func.sum(ur.quantity), func.sum(ur.cost_usd))
        .select_from(_claimed_join())
        .where(where)
        .group_by(ur.line_item, ur.unit, byo)
        .order_by(ur.line_item, ur.unit, byo)
    )
    return [UsageLine(r[0], r[1], _dec(r[3]), _dec(r[4]), bool(r[2])) for r in db.execute(q)]


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value or 0)


def claimed_usage(
    db: Connection, invoice_id: str, *, late: bool, lo: datetime | None = None, hi: datetime | None = None
) -> list[UsageLine]:
    where = and_(ic.invoice_id == invoice_id, ic.late == late)
    if lo is not None:
        where = and_(where, ur.created >= lo, ur.created < hi)
    return _usage_sum(db, where)


def billed_usage(
    db: Connection, customer_id: str, lo: datetime, hi: datetime, *, other_than: str
) -> list[UsageLine]:
    """Usage of the customer in [lo, hi) claimed by invoices other than ``other_than``."""
    return _usage_sum(
        db,
        and_(ur.customer_id == customer_id, *_in_range(lo, hi), ic.invoice_id != other_than),
    )


def claimed_records(db: Connection, invoice_id: str | None = None) -> list[tuple[int, str, bool]]:
    """(usage record id, invoice id, late) for every record a claim bills (of one invoice, or all), by
    record id; a record listed twice would be billed twice (the property tests check it never is)."""
    q = select(ur.id, ic.invoice_id, ic.late).select_from(
        usage_records.join(invoice_claims, _rect_predicate())
    )
    if invoice_id is not None:
        q = q.where(ic.invoice_id == invoice_id)
    return [(int(r[0]), r[1], bool(r[2])) for r in db.execute(q.order_by(ur.id, ic.invoice_id))]


def claimed_ids(db: Connection) -> dict[int, str]:
    """Usage record id -> the invoice that bills it."""
    return {r[0]: r[1] for r in claimed_records(db)}


def claims_count(db: Connection, invoice_id: str) -> int:
    """How many usage records the invoice bills."""
    q = select(func.coalesce(func.sum(ic.records), 0)).where(ic.invoice_id == invoice_id)
    return int(db.execute(q).scalar_one())


# ---------------------------------------------------------------------------- numbers


def next_number(db: Connection, name: str) -> int:
    """Increment the counter ``name`` (creating it at 1) and return the new value, in the caller's
    transaction: the row stays locked (PostgreSQL) until commit, so concurrent finalizers queue and
    a rolled-back finalize gives its number back — the sequence has no gaps."""
    dialect = db.dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = ins(number_counters).values(name=name, value=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[number_counters.c.name], set_={"value": number_counters.c.value + 1}
    ).returning(number_counters.c.value)
    return int(db.execute(stmt).scalar_one())


# ---------------------------------------------------------------------------- credit notes


def insert_credit_note(db: Connection, values: dict[str, Any]) -> None:
    db.execute(insert(credit_notes).values(**values))


def credit_notes_of(db: Connection, invoice_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        select(credit_notes).where(credit_notes.c.invoice_id == invoice_id).order_by(credit_notes.c.number)
    ).mappings()
    return [dict(r) for r in rows]


def get_credit_note(db: Connection, ref: str) -> dict[str, Any] | None:
    row = (
        db.execute(select(credit_notes).where(or_(credit_notes.c.id == ref, credit_notes.c.number == ref)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def credited_in(db: Connection, invoice_ids: list[str]) -> dict[str, Decimal]:
    if not invoice_ids:
        return {}
    rows = db.execute(
        select(credit_notes.c.invoice_id, func.sum(credit_notes.c.subtotal))
        .where(credit_notes.c.invoice_id.in_(invoice_ids))
        .group_by(credit_notes.c.invoice_id)
    )
    return {r[0]: _dec(r[1]) for r in rows}
