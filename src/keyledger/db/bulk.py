"""Bulk inserts below SQLAlchemy's per-row statement machinery, for writes of thousands of rows at once.

A Core ``insert`` with a list of rows costs tens of microseconds per row in parameter handling and type
processing — more than the database's own work for an invoice run's drafts, lines, claims and audit
entries. :func:`write_rows` stores exactly what a Core insert of the same values would store:

- PostgreSQL: ``COPY … FROM STDIN`` (statement-level triggers fire as for an INSERT); JSON values are
  adapted for the driver (None as JSON ``null``, as Core stores it), amounts rounded to the column's 10
  places as :class:`ExactAmount`'s binding does, and naive datetimes for a :class:`UTCDateTime` column
  refused, as its binding does.
- SQLite: the driver's ``executemany``; each value goes through its column type's conversion once —
  :class:`ExactAmount`, :class:`UTCDateTime` and ``Date`` by the direct equivalent of their bind
  processors (``tests/store/test_db_bulk.py`` compares both on every such column), any other type by
  SQLAlchemy's own bind processor.

Only the given columns are written: Python-side column defaults do not apply (give every value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Connection, Date, Table

from keyledger.db.metadata import ExactAmount, UTCDateTime, to_sqlite_units, to_stored_amount

Converter = Callable[[Any], Any]


def write_rows(db: Connection, table: Table, cols: Sequence[str], rows: list[list[Any]]) -> None:
    """Insert ``rows`` (value lists in ``cols`` order; converted in place) as one statement."""
    if not rows:
        return
    postgresql = db.dialect.name == "postgresql"
    converters = _pg_converters(table, cols) if postgresql else _sqlite_converters(db, table, cols)
    if converters:
        for values in rows:
            for k, convert in converters:
                values[k] = convert(values[k])
    if postgresql:
        raw = db.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
            for values in rows:
                copy.write_row(values)
        return
    marks = ", ".join("?" for _ in cols)
    db.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks})", [tuple(values) for values in rows]
    )


def _pg_converters(table: Table, cols: Sequence[str]) -> list[tuple[int, Converter]]:
    """(position, conversion) of the columns ``COPY`` needs adapted or checked as Core's binding would."""
    from psycopg.types.json import Json

    out: list[tuple[int, Converter]] = []
    for k, name in enumerate(cols):
        column_type = table.c[name].type
        if isinstance(column_type, JSON):  # None too: a Core insert stores it as JSON null
            out.append((k, Json))
        elif isinstance(column_type, UTCDateTime):
            out.append((k, _aware))
        elif isinstance(column_type, ExactAmount):
            out.append((k, _pg_amount))
    return out


def _sqlite_converters(db: Connection, table: Table, cols: Sequence[str]) -> list[tuple[int, Converter]]:
    """(position, conversion) of the columns whose values SQLite stores in another form."""
    out: list[tuple[int, Converter]] = []
    for k, name in enumerate(cols):
        column_type = table.c[name].type
        if isinstance(column_type, ExactAmount):
            out.append((k, _sqlite_amount))
        elif isinstance(column_type, UTCDateTime):
            out.append((k, _sqlite_instant))
        else:
            fallback = column_type.dialect_impl(db.dialect).bind_processor(db.dialect)
            if isinstance(column_type, Date) and fallback is not None:
                out.append((k, _sqlite_day(fallback)))
            elif fallback is not None:
                out.append((k, fallback))
    return out


def _pg_amount(value: Any) -> Any:
    return to_stored_amount(value) if isinstance(value, Decimal) else value


def _sqlite_amount(value: Any) -> int | None:
    return None if value is None else to_sqlite_units(value)


def _aware(value: Any) -> Any:
    """A UTCDateTime value as its binding checks it: a naive datetime is refused (PostgreSQL would
    read it in the session's time zone)."""
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


def _sqlite_instant(value: Any) -> str | None:
    """UTCDateTime's storage on SQLite: naive UTC in SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    return _aware(value).astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_day(fallback: Converter) -> Converter:
    def convert(value: Any) -> Any:
        return value.isoformat() if type(value) is date else fallback(value)

    return convert
