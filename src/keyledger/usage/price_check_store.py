"""SQL of the price check: the ledger records of a period, streamed in chunks (never all in memory).

Reads only the columns the check needs, through the ``(connection_id, created)`` index (or
``(customer_id, day)`` when one customer is asked for). Nothing here writes; the sync path is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, select

from keyledger.db.tables_usage import usage_records
from keyledger.usage.price_check import LedgerRecord

CHUNK = 10_000


def period_records(
    conn: Connection,
    *,
    connection_ids: list[str],
    first: date,
    last: date,
    customer_id: str | None = None,
) -> Iterator[LedgerRecord]:
    """Records created on the UTC days ``first``..``last`` (inclusive) of the connections."""
    ur = usage_records.c
    # ``day``, not ``created``: the check needs the UTC day only, and decoding instants costs more than
    # the check itself.
    stmt = select(ur.request_id, ur.line_item, ur.unit, ur.quantity, ur.cost_usd, ur.day).where(
        ur.connection_id.in_(connection_ids)
    )
    if customer_id is not None:
        stmt = stmt.where(ur.customer_id == customer_id, ur.day >= first, ur.day <= last)
    else:
        lo = datetime.combine(first, time.min, tzinfo=UTC)
        hi = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
        stmt = stmt.where(ur.created >= lo, ur.created < hi)
    result = conn.execution_options(yield_per=CHUNK).execute(stmt)
    for row in result:
        yield LedgerRecord(*row)
