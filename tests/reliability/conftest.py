"""The fault suite's seeds, figures and markers.

Seeds: ``KEYLEDGER_SEED=N`` runs that seed only (a failure prints this command); ``KEYLEDGER_SOAK_SEEDS=N``
(``make soak``) runs seeds 1..N on SQLite and every tenth on PostgreSQL; otherwise the bounded sample of
``make test``. At the end, one line of figures: what docs/reliability.md quotes.
"""

from __future__ import annotations

import os
from collections import Counter

BOUNDED_SQLITE = 16  # seeds 1..16 on SQLite in `make test`
BOUNDED_POSTGRES = 4  # seeds 1..4 on PostgreSQL


def seeds() -> list[int]:
    if os.environ.get("KEYLEDGER_SEED"):
        return [int(os.environ["KEYLEDGER_SEED"])]
    return list(range(1, soak_seeds() + 1)) if soak_seeds() else list(range(1, BOUNDED_SQLITE + 1))


def soak_seeds() -> int:
    return int(os.environ.get("KEYLEDGER_SOAK_SEEDS") or 0)


def runs_on_postgres(seed: int) -> bool:
    if os.environ.get("KEYLEDGER_SEED"):
        return True
    return seed % 10 == 0 if soak_seeds() else seed <= BOUNDED_POSTGRES


FIGURES: Counter = Counter()
POINTS: Counter = Counter()  # kill -9 per fault point


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "reliability: the seeded kill -9 and fault-storm suite")


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES["seeds"]:
        return
    f = FIGURES
    terminalreporter.write_line(
        f"reliability: {f['seeds']} seeded runs, {f['kills']} kill points (kill -9), "
        f"{f['records_lost']} lost, {f['records_duplicated']} duplicated, "
        f"{f['amounts_wrong']} amounts wrong, "
        f"{f['events_lost']} events lost, {f['events_new_id']} sent under a new id "
        f"({f['resends_same_id']} re-sent under the same id), {f['invoices_changed']} finalized invoices "
        f"changed, {f['usage_claimed_twice']} invoiced twice, {f['keys_orphaned']} orphan keys, "
        f"{f['revocations_wrong']} wrong revocations; "
        f"{f['storms']} storms, {f['moving_pages']} moving-pagination syncs"
    )
    terminalreporter.write_line(
        "reliability: kill -9 at "
        + ", ".join(f"{p} x{n}" for p, n in sorted(POINTS.items()))
        + f" ({f['not_reached']} planned kill points not on the operation's path)"
    )
