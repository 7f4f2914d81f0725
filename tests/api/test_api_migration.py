"""Migration 0005 (branch ``api``) round trip on SQLite and PostgreSQL: downgrading it removes exactly its
tables and leaves the other branches alone; upgrading to every head restores them, usable again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from keyledger.db.migrate import alembic_config, current_heads, heads, upgrade

API_TABLES = {"admin_tokens", "portal_tokens", "idempotency_keys"}


def _downgrade_api_branch(engine) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "api@-1")


def test_migration_0005_round_trip(engine):
    assert "0005" in current_heads(engine)
    before = set(inspect(engine).get_table_names())
    assert API_TABLES <= before
    _downgrade_api_branch(engine)
    after = set(inspect(engine).get_table_names())
    assert after == before - API_TABLES
    assert "0005" not in current_heads(engine)
    upgrade(engine)
    assert current_heads(engine) == heads()
    assert set(inspect(engine).get_table_names()) == before
    from types import SimpleNamespace

    from keyledger.core.clock import SystemClock
    from keyledger.customers.tokens import TokenService

    svc = TokenService(SimpleNamespace(engine=engine, clock=SystemClock()), actor="tests")
    tok, secret = svc.create_admin("after-round-trip")
    assert svc.authenticate(secret).token_id == tok.id
