"""Sharded runs (``run(period, shard=(i, n))``): n shards split the customers without overlap, and together
build exactly the drafts one run builds (late adjustments, time zones, skipped customers included), on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyledger.core.errors import Invalid
from keyledger.invoices.model import parse_shard, shard_of
from tests.invoice_support import World


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def content(w: World, invoice_id: str) -> dict:
    doc = w.service.get(invoice_id)
    return {k: doc[k] for k in ("customer_id", "period", "currency", "subtotal", "tax", "total", "lines")}


def test_n_shards_build_the_drafts_of_one_run(engine):
    w = World(engine)
    plans = ("flat", "tiered", "euro", None)
    ids = []
    for i in range(14):
        plan = plans[i % len(plans)]
        c = w.customer(
            f"s{i:02d}", plan=plan, tz="America/New_York" if i % 3 == 0 else "UTC",
            currency="EUR" if plan == "euro" else "USD",
        )
        ids.append(c)
        w.usage(c, at(2026, 1, 10), minutes=str(10 + i))
    first = w.service.run("2026-01")
    for e in first.entries:
        if e.outcome == "created" and e.customer_id in ids[::2]:
            w.service.finalize(e.invoice_id)
    for i, c in enumerate(ids):
        w.usage(c, at(2026, 1, 20), minutes="150")  # late for the finalized January invoices
        w.usage(c, at(2026, 2, 1, 2), "sync::nova-3", minutes=str(i + 1))  # January in New York

    n = 3
    by_shard = [w.service.run("2026-02", shard=(i, n)).entries for i in range(n)]
    seen = [e.customer_id for entries in by_shard for e in entries]
    assert sorted(seen) == sorted(ids)  # every customer in exactly one shard
    for i, entries in enumerate(by_shard):
        assert entries and all(shard_of(e.customer_id, n) == i for e in entries)
    sharded = {e.customer_id: e for entries in by_shard for e in entries}
    drafts = {c: content(w, e.invoice_id) for c, e in sharded.items() if e.invoice_id}
    assert {e.outcome for e in sharded.values()} == {"created", "skipped"}
    assert any(line["late_adjustment"] for d in drafts.values() for line in d["lines"])

    whole = {e.customer_id: e for e in w.service.run("2026-02").entries}
    assert set(whole) == set(sharded)
    for c, e in whole.items():
        before = sharded[c]
        assert (e.invoice_id, e.total, e.outcome) == (
            before.invoice_id, before.total, "rebuilt" if before.outcome == "created" else before.outcome
        )
        if e.invoice_id:
            assert content(w, e.invoice_id) == drafts[c]


def test_shard_is_i_of_n():
    assert parse_shard("0/4") == (0, 4) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "1/0", "x/2", "1", ""):
        with pytest.raises(Invalid, match="I/N"):
            parse_shard(bad)
    assert shard_of("cus_abc", 7) == shard_of("cus_abc", 7) < 7


def test_bad_shard_is_refused_before_anything_changes(engine):
    w = World(engine)
    c = w.customer("a")
    w.usage(c, at(2026, 1, 10))
    with pytest.raises(Invalid, match="shard 2/2"):
        w.service.run("2026-01", shard=(2, 2))
    assert w.service.list() == []
