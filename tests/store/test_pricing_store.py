"""Plan versions on SQLite and PostgreSQL: import, no-op re-import, effective dates, plan_for."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from keyledger.core.clock import FrozenClock
from keyledger.core.errors import Conflict, Invalid, NotFound
from keyledger.db.tables_customers import audit_log
from keyledger.pricing import service
from keyledger.pricing.model import Mode

PLAN = """\
id: growth
name: Growth
currency: USD
mode: rate_card
base_fee: "49.00"
effective_from: {eff}
rates:
  "sync::*": {{unit: minute, tier_mode: graduated, tiers: [{{up_to: 1000, price: "0.0080"}}, {{price: {p}}}]}}
  "streaming::*": {{unit: minute, price: "0.0000000001"}}
"""


def plan_text(eff="2026-01-01", p='"0.0060"'):
    return PLAN.format(eff=eff, p=p)


@pytest.fixture
def clock():
    return FrozenClock(datetime(2026, 2, 10, 9, 0, tzinfo=UTC))


def imp(engine, clock, text, name="growth.yaml"):
    return service.import_plan_text(engine, text, name=name, clock=clock)


def test_import_stores_an_exact_version_and_identical_imports_are_no_ops(engine, clock):
    first = imp(engine, clock, plan_text())
    assert first.created and first.version.version == 1 and first.backdated
    stored = service.get_plan_version(engine, first.version.id)
    assert stored.plan.rate_for("streaming::nova-3").price == D("0.0000000001")
    assert str(stored.plan.rate_for("sync::nova-3").tiers[0].price) == "0.0080"  # as written
    assert stored.plan.mode is Mode.RATE_CARD and stored.plan.base_fee == D("49.00")
    again = imp(engine, clock, plan_text())
    assert not again.created and again.version.id == first.version.id
    # same value written differently, and a later effective date with the same terms: still nothing new
    assert not imp(engine, clock, plan_text(p="0.006")).created
    assert not imp(engine, clock, plan_text(eff="2026-02-01")).created
    assert [v.version for v in service.plan_versions(engine, "growth")] == [1]
    with engine.connect() as conn:
        audits = conn.execute(select(audit_log).where(audit_log.c.subject == "plan:growth")).all()
    assert [(a.action, a.details["version"]) for a in audits] == [("plan.imported", 1)]


def test_changes_take_effect_from_their_date_and_past_periods_keep_their_version(engine, clock):
    v1 = imp(engine, clock, plan_text()).version
    v2 = imp(engine, clock, plan_text(eff="2026-03-01", p='"0.0050"')).version
    assert v2.version == 2
    assert service.plan_for(engine, "growth", date(2026, 1, 1)).id == v1.id
    assert service.plan_for(engine, "growth", date(2026, 2, 1)).id == v1.id
    assert service.plan_for(engine, "growth", date(2026, 3, 1)).id == v2.id
    assert service.plan_for(engine, "growth", date(2027, 1, 1)).plan.rate_for("sync::x").tiers[1].price == D(
        "0.0050")
    with pytest.raises(NotFound, match=r"plan 'growth' has no version in effect on 2025-12-01 \(its first"):
        service.plan_for(engine, "growth", date(2025, 12, 1))
    # going back to the first terms from March is a change (the version in effect then differs)
    v3 = imp(engine, clock, plan_text(eff="2026-03-01")).version
    assert v3.version == 3 and service.plan_for(engine, "growth", date(2026, 3, 1)).id == v3.id
    assert service.plan_for(engine, "growth", date(2026, 2, 1)).id == v1.id


def test_plan_for_inside_a_callers_transaction(engine, clock):
    v1 = imp(engine, clock, plan_text()).version
    with engine.begin() as conn:
        assert service.plan_for(conn, "growth", date(2026, 5, 1)) == v1


def test_effective_from_defaults_to_today(engine, clock):
    text = plan_text().replace("effective_from: 2026-01-01\n", "")
    result = imp(engine, clock, text)
    assert result.version.effective_from == date(2026, 2, 10) and not result.backdated


def test_currency_cannot_change_and_invalid_files_store_nothing(engine, clock):
    imp(engine, clock, plan_text())
    with pytest.raises(Conflict, match="plan 'growth' bills in USD"):
        imp(engine, clock, plan_text(eff="2026-04-01").replace("USD", "EUR"))
    with pytest.raises(Invalid, match=r'growth.yaml:8: rates."sync::\*".tiers\[1\].price: must not be neg'):
        imp(engine, clock, plan_text(eff="2026-04-01", p='"-1"'))
    assert len(service.plan_versions(engine, "growth")) == 1


def test_list_and_unknown_plans(engine, clock):
    imp(engine, clock, plan_text())
    imp(engine, clock, plan_text(eff="2026-06-01", p='"0.0050"'))
    imp(engine, clock, "id: at-cost\ncurrency: USD\nmode: pass_through\n", name="at-cost.yaml")
    summaries = service.list_plans(engine, today=date(2026, 2, 10))
    assert [(s.plan_id, s.versions, s.latest.version, s.current.version) for s in summaries] == [
        ("at-cost", 1, 1, 1), ("growth", 2, 2, 1),
    ]
    with pytest.raises(NotFound, match="no plan 'nope'"):
        service.plan_versions(engine, "nope")
    with pytest.raises(NotFound, match="no plan 'nope'"):
        service.plan_for(engine, "nope", date(2026, 1, 1))
    with pytest.raises(NotFound, match="no plan version 'plv_x'"):
        service.get_plan_version(engine, "plv_x")


def test_price_period_uses_the_version_in_effect_at_the_period_start(engine, clock):
    from keyledger.pricing.model import Period

    imp(engine, clock, plan_text())
    v2 = imp(engine, clock, plan_text(eff="2026-03-01").replace('"49.00"', '"59.00"')).version
    usage = [("sync::nova-3", "minute", D(1500), D("6.45"))]
    feb = service.price_period(engine, "growth", Period.month("2026-02"), usage)
    mar = service.price_period(engine, "growth", Period.month("2026-03"), usage)
    assert feb.version.version == 1 and mar.version.id == v2.id
    assert (feb.rated.total, mar.rated.total) == (D("60.00"), D("70.00"))  # 8.00 + 3.00 usage + base fee
