"""Invoice immutability below the service layer, on SQLite and PostgreSQL: the triggers of migration
0003 (PostgreSQL inserts: 0007, once per statement) refuse raw SQL that would change a finalized invoice,
its lines or usage claims, or a credit note; the allowed transitions pass. Also: the number counter, the
one-live-invoice-per-period index."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from keyledger.db.migrate import alembic_config, current_heads, heads, upgrade
from keyledger.invoices import store
from keyledger.invoices.calc import Line
from tests.invoice_support import World

T = datetime(2026, 1, 3, 12, tzinfo=UTC)


@pytest.fixture
def w(engine) -> World:
    return World(engine)


def _invoice(w: World, ext: str = "acme", finalize: bool = True) -> str:
    c = w.customer(ext)
    w.usage(c, T, minutes="10")
    inv = w.service.run("2026-01", customer=c).entries[0].invoice_id
    if finalize:
        w.service.finalize(inv)
    return inv


def refused(engine, sql: str, **params) -> str:
    with pytest.raises(DBAPIError) as err:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    return str(err.value.orig)


def ok(engine, sql: str, **params) -> int:
    with engine.begin() as conn:
        return conn.execute(text(sql), params).rowcount


def snapshot(engine, inv: str):
    with engine.connect() as conn:
        head = conn.execute(text("SELECT * FROM invoices WHERE id = :i"), {"i": inv}).one()
        lines = conn.execute(text("SELECT * FROM invoice_lines WHERE invoice_id = :i"), {"i": inv}).all()
        claims = conn.execute(text("SELECT * FROM invoice_claims WHERE invoice_id = :i"), {"i": inv}).all()
    return head, lines, claims


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE invoices SET total = 0 WHERE id = :i",
        "UPDATE invoices SET number = 'INV-2026-999999' WHERE id = :i",
        "UPDATE invoices SET status = 'draft' WHERE id = :i",
        "UPDATE invoices SET status = 'paid', total = 0 WHERE id = :i",
        "UPDATE invoices SET customer_name = 'Someone else' WHERE id = :i",
        "UPDATE invoices SET updated_at = finalized_at WHERE id = :i",
        "DELETE FROM invoices WHERE id = :i",
        "UPDATE invoice_lines SET amount = 0 WHERE invoice_id = :i",
        "UPDATE invoice_lines SET description = 'x' WHERE invoice_id = :i",
        "DELETE FROM invoice_lines WHERE invoice_id = :i",
        "INSERT INTO invoice_lines (invoice_id, position, kind, description, amount, provider_cost_usd, "
        "late_adjustment) VALUES (:i, 99, 'usage', 'sneaky', 0, 0, false)",
        "DELETE FROM invoice_claims WHERE invoice_id = :i",
        "UPDATE invoice_claims SET late = true WHERE invoice_id = :i",
        "UPDATE invoice_claims SET id_upto = id_upto + 1 WHERE invoice_id = :i",
        "INSERT INTO invoice_claims (invoice_id, customer_id, created_lo, created_hi, id_after, id_upto, "
        "late, records) SELECT id, customer_id, starts_at, ends_at, 987654, 987655, false, 1 FROM invoices "
        "WHERE id = :i",
    ],
)
def test_raw_sql_cannot_change_a_finalized_invoice(w, engine, sql):
    inv = _invoice(w)
    before = snapshot(engine, inv)
    message = refused(engine, sql, i=inv)
    assert "finalized" in message
    assert snapshot(engine, inv) == before


SNEAK_LINES = (
    "INSERT INTO invoice_lines (invoice_id, position, kind, description, amount, provider_cost_usd, "
    "late_adjustment) SELECT id, 99, 'usage', 'sneaky', 0, 0, false FROM invoices WHERE id IN (:d, :f)"
)


def test_one_insert_into_a_draft_and_a_finalized_invoice_inserts_nothing(w, engine):
    """PostgreSQL checks inserts once per statement (migration 0007): one bad row fails all of them."""
    draft, final = _invoice(w, "draft", finalize=False), _invoice(w, "final")
    before = snapshot(engine, draft), snapshot(engine, final)
    assert "finalized" in refused(engine, SNEAK_LINES, d=draft, f=final)
    assert (snapshot(engine, draft), snapshot(engine, final)) == before
    assert ok(engine, SNEAK_LINES, d=draft, f=draft) == 1  # a draft's lines are free


OLD_CLAIM = "INSERT INTO invoice_usage (usage_record_id, invoice_id, late) VALUES (987654, :i, false)"
NEW_CLAIM = (
    "INSERT INTO invoice_claims (invoice_id, customer_id, created_lo, created_hi, id_after, id_upto, "
    "late, records) SELECT id, customer_id, starts_at, ends_at, 987654, 987655, false, 1 FROM invoices "
    "WHERE id = :i"
)


def test_migrations_0007_0008_round_trip_keep_the_insert_guard(w, engine):
    """Downgrading 0008 restores invoice_usage with 0007's guard, downgrading 0007 restores 0003's
    row-level guard; upgrading restores invoice_claims with its guards: finalized invoices refuse new
    claims all the way."""
    final = _invoice(w)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    for steps in ("invoice_guard@-1", "invoice_guard@-1"):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, steps)
        assert "finalized" in refused(engine, OLD_CLAIM, i=final)
    assert not {"0007", "0008"} & current_heads(engine)
    upgrade(engine)
    assert current_heads(engine) == heads()
    assert "finalized" in refused(engine, NEW_CLAIM, i=final)


def test_allowed_transitions_pass_the_triggers_and_then_freeze(w, engine):
    a, b = _invoice(w, "a"), _invoice(w, "b")
    assert (
        ok(
            engine,
            "UPDATE invoices SET status = 'paid', paid_at = :t, updated_at = :t WHERE id = :i",
            i=a,
            t=T,
        )
        == 1
    )
    refused(engine, "UPDATE invoices SET status = 'void' WHERE id = :i", i=a)
    refused(engine, "UPDATE invoices SET paid_at = NULL WHERE id = :i", i=a)
    refused(engine, "DELETE FROM invoices WHERE id = :i", i=a)
    assert (
        ok(
            engine,
            "UPDATE invoices SET status = 'void', voided_at = :t, void_reason = 'x' WHERE id = :i",
            i=b,
            t=T,
        )
        == 1
    )
    # A void invoice's claims may be released (a replacement bills the usage); its lines stay.
    assert ok(engine, "DELETE FROM invoice_claims WHERE invoice_id = :i", i=b) == 1
    refused(engine, "DELETE FROM invoice_lines WHERE invoice_id = :i", i=b)
    refused(engine, "UPDATE invoices SET status = 'finalized' WHERE id = :i", i=b)


def test_drafts_are_freely_rewritten_but_cannot_skip_finalize(w, engine):
    d = _invoice(w, finalize=False)
    refused(engine, "UPDATE invoices SET status = 'paid', number = 'X-1' WHERE id = :i", i=d)
    refused(
        engine, "UPDATE invoices SET status = 'finalized' WHERE id = :i", i=d
    )  # no number: check constraint
    assert ok(engine, "UPDATE invoice_lines SET amount = 1 WHERE invoice_id = :i", i=d) == 1
    assert ok(engine, "DELETE FROM invoice_claims WHERE invoice_id = :i", i=d) == 1
    assert ok(engine, "DELETE FROM invoice_lines WHERE invoice_id = :i", i=d) == 1
    assert ok(engine, "DELETE FROM invoices WHERE id = :i", i=d) == 1


def test_store_functions_are_refused_on_a_finalized_invoice(w, engine):
    inv = _invoice(w)
    line = Line("usage", "extra", "x", "minute", Decimal(1), Decimal(1), Decimal(1), Decimal(0))
    for call in (
        lambda c: store.replace_lines(c, inv, [line]),
        lambda c: store.release_claims(c, inv),
        lambda c: store.update_invoice(c, inv, {"total": Decimal(0)}),
    ):
        with pytest.raises(DBAPIError):
            with engine.begin() as conn:
                call(conn)


def test_credit_notes_are_immutable(w, engine):
    inv = _invoice(w)
    w.service.credit(inv, reason="goodwill", amount="0.01")
    refused(engine, "UPDATE credit_notes SET total = 0")
    refused(engine, "DELETE FROM credit_notes")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT number FROM credit_notes")).scalar() == "CN-2026-000001"


def test_one_live_invoice_per_customer_and_period(w, engine):
    inv = _invoice(w)
    with engine.connect() as conn:
        row = dict(conn.execute(text("SELECT * FROM invoices WHERE id = :i"), {"i": inv}).mappings().one())
    dup = {
        **row,
        "id": "inv_dup",
        "number": None,
        "status": "draft",
        "finalized_at": None,
        "issued_on": None,
        "due_on": None,
    }
    cols = ", ".join(dup)
    vals = ", ".join(f":{k}" for k in dup)
    with pytest.raises(DBAPIError):
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO invoices ({cols}) VALUES ({vals})"), dup)
    w.service.void(inv)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO invoices ({cols}) VALUES ({vals})"), dup)


def test_number_counter_is_gapless_across_rollbacks(engine):
    with engine.begin() as conn:
        assert [store.next_number(conn, "INV-2026") for _ in range(3)] == [1, 2, 3]
        assert store.next_number(conn, "INV-2027") == 1
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            assert store.next_number(conn, "INV-2026") == 4
            raise RuntimeError("finalize failed after taking a number")
    with engine.begin() as conn:
        assert store.next_number(conn, "INV-2026") == 4  # the rolled-back number is given out again


def test_migration_0003_downgrades_and_upgrades_cleanly(tmp_path):
    from alembic import command

    from keyledger.db.engine import make_engine
    from keyledger.db.migrate import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    eng = make_engine(url)
    upgrade(eng)
    cfg = alembic_config(url)
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    with eng.connect() as conn:
        names = {
            r[0]
            for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')"))
        }
    assert not {n for n in names if "invoice" in n or "credit" in n or "counter" in n}
    upgrade(eng)
    with eng.connect() as conn:
        triggers = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
    assert {"kl_invoices_no_update", "kl_invoice_lines_no_delete", "kl_credit_notes_no_update"} <= triggers
    eng.dispose()


def test_run_tuning_applies_to_the_run_transaction_only(engine):
    """A run's transaction gets its tuning (PostgreSQL: SET LOCAL work_mem, jit, parallel_tuple_cost;
    SQLite: a larger page cache), and the connection is back to its own settings after it."""
    if engine.dialect.name == "postgresql":
        names = ("work_mem", "jit", "parallel_tuple_cost")
        want = (store.PG_RUN_WORK_MEM, "off", store.PG_RUN_PARALLEL_TUPLE_COST)

        def read(conn):
            return tuple(conn.exec_driver_sql(f"SHOW {n}").scalar_one() for n in names)
    else:
        want = (-store.SQLITE_RUN_CACHE_KIB,)

        def read(conn):
            return (conn.exec_driver_sql("PRAGMA cache_size").scalar_one(),)

    with engine.connect() as conn:
        before = read(conn)
        conn.commit()
        assert before != want
        with conn.begin(), store.run_tuning(conn):
            assert read(conn) == want
        assert read(conn) == before
