"""The one MetaData every table registers on, with a naming convention so migrations are stable."""

from __future__ import annotations

from datetime import UTC
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from sqlalchemy import BigInteger, MetaData, Numeric, TypeDecorator
from sqlalchemy.types import DateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Money and quantities: exact decimals with 10 places (unit prices keep 10 places).
#
# ExactAmount is NUMERIC(28, 10) on PostgreSQL and, on SQLite, a 64-bit integer count of 1e-10 units:
# SQLite's NUMERIC affinity would store a decimal as a binary float (and SUM would add floats); as
# scaled integers, stored values and SQL sums stay exact on both databases. The SQLite bound is
# ±922,337,203 units per value or sum.
SCALE = 10
_QUANTUM = Decimal(1).scaleb(-SCALE)


class ExactAmount(TypeDecorator):
    """An exact decimal with 10 places: NUMERIC on PostgreSQL, scaled BIGINT on SQLite."""

    impl = Numeric(28, SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(28, SCALE, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return value
        if dialect.name != "sqlite":
            return to_stored_amount(value) if isinstance(value, Decimal) else value
        return to_sqlite_units(value if isinstance(value, Decimal) else Decimal(value))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":  # exactly 10 places: the integer's digits, exponent -10
            return Decimal(int(value)).scaleb(-SCALE)
        return value if isinstance(value, Decimal) else Decimal(str(value))


def to_stored_amount(value: Decimal) -> Decimal:
    """``value`` at the 10 places :class:`ExactAmount` keeps, half-even — what SQLite's scaled integers
    store (:func:`to_sqlite_units`); bound so on PostgreSQL too, whose NUMERIC would otherwise round a
    longer value half away from zero, so both databases store the same amount. A value too large for
    the column is passed on unchanged, for the database to refuse."""
    try:
        return value.quantize(_QUANTUM, ROUND_HALF_EVEN)
    except InvalidOperation:
        return value


def to_sqlite_units(value: Decimal) -> int:
    """What :class:`ExactAmount` stores on SQLite for ``value`` (for bulk paths that bypass binding)."""
    return int(value.scaleb(SCALE).to_integral_value(ROUND_HALF_EVEN))


Money = ExactAmount()
Quantity = ExactAmount()


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on both SQLite (stored naive UTC) and PostgreSQL (timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
