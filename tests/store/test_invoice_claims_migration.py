"""Migration 0008 upgrades a database that has per-record claims (invoice_usage) to rectangles
(invoice_claims): the same invoices bill the same records, finalized invoices stay untouched, and runs
after the upgrade bill late usage and replacements correctly. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from keyledger.db.migrate import alembic_config, current_heads, heads, upgrade
from keyledger.invoices import store
from tests.invoice_support import World


def at(y, m, d, h=12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def test_upgrade_converts_per_record_claims_and_bills_the_same_records(engine):
    w = World(engine, at=at(2026, 3, 20))
    a = w.customer("mig-a", plan="tiered")
    b = w.customer("mig-b", tz="Asia/Tokyo")
    for c in (a, b):
        w.usage(c, at(2026, 1, 3), minutes="40")
        w.usage(c, at(2026, 1, 31, 20), minutes="7")  # February in Tokyo
        w.usage(c, at(2026, 2, 10), minutes="11")
    w.service.run("2026-01")
    jan_a = w.service.finalize(w.service.list(customer=a, period="2026-01")[0]["id"])
    w.usage(a, at(2026, 1, 20), minutes="5")  # late for January
    w.usage(a, at(2026, 1, 3), minutes="2")  # late, at the instant of a record January bills
    w.usage(b, at(2026, 1, 10), minutes="4")  # b's January is a draft, not rebuilt: billed by nothing
    w.usage(a, at(2026, 3, 2), minutes="6")  # March: no invoice yet
    w.service.run("2026-02")  # a's February draft bills it as late usage
    with engine.connect() as db:
        before = store.claimed_records(db)
    docs = {i["id"]: w.service.get(i["id"]) for i in w.service.list()}
    assert any(late for _, _, late in before)
    with engine.connect() as db:
        everything = set(db.execute(text("SELECT id FROM usage_records")).scalars())
    assert len(everything - {rid for rid, _, _ in before}) == 2

    # Back to per-record claims (0007): one invoice_usage row per billed record.
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "invoice_guard@-1")
    assert "0008" not in current_heads(engine)
    with engine.connect() as db:
        rows = db.execute(text("SELECT usage_record_id, invoice_id, late FROM invoice_usage")).all()
    assert sorted((r[0], r[1], bool(r[2])) for r in rows) == before

    # The upgrade under test: per-record rows -> rectangles, the same records billed by the same invoices.
    upgrade(engine)
    assert current_heads(engine) == heads()
    with engine.connect() as db:
        assert store.claimed_records(db) == before
        # One rectangle per run of records billed by the same invoice, not one per record.
        assert db.execute(text("SELECT count(*) FROM invoice_claims")).scalar_one() < len(before)
        assert sum(store.claims_count(db, i) for i in docs) == len(before)
    assert {i: w.service.get(i) for i in docs} == docs

    # Runs after the upgrade: rebuilding drafts bills the same; a new late record goes to March; a void
    # January is replaced by an invoice that bills exactly what it billed.
    w.service.run("2026-02")
    assert {i: w.service.get(i) for i in docs} == docs
    w.usage(a, at(2026, 1, 25), minutes="3")
    [mar] = w.service.run("2026-03", customer=a).entries
    late = [x for x in w.service.get(mar.invoice_id)["lines"] if x["late_adjustment"]]
    assert [x["quantity"] for x in late if x["kind"] == "usage"] == ["3"]
    w.service.void(jan_a["id"], reason="migrated")
    [again] = w.service.run("2026-01", customer=a).entries
    with engine.connect() as db:
        billed = {rid for rid, inv, _ in store.claimed_records(db) if inv == again.invoice_id}
        old = {rid for rid, inv, _ in before if inv == jan_a["id"]}
        rows = store.claimed_records(db)
    assert billed == old
    assert len(rows) == len({rid for rid, _, _ in rows})  # no record billed twice
    w.service.run("2026-01", customer=b)  # the draft takes the record that arrived for it
    with engine.connect() as db:
        rows = store.claimed_records(db)
        everything = set(db.execute(text("SELECT id FROM usage_records")).scalars())
    assert len(rows) == len({rid for rid, _, _ in rows}) and {rid for rid, _, _ in rows} == everything
