"""`keyledger plans import|list|show` as a real subprocess on SQLite and PostgreSQL: the three example
plans, no-op re-imports, new versions by effective date, JSON contracts, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "keyledger" / "demo" / "plans"


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def test_import_list_show_the_example_plans(run_cli):
    for name in ("at-cost.yaml", "standard.toml", "growth.yaml"):
        out = ok(run_cli("plans", "import", str(EXAMPLES / name))).stdout
        assert out.startswith("imported plan ") and "version 1" in out
    again = ok(run_cli("plans", "import", str(EXAMPLES / "growth.yaml"), "--json"))
    assert json.loads(again.stdout) == {
        "id": "growth", "name": "Growth", "mode": "rate_card", "currency": "USD", "version": 1,
        "version_id": json.loads(again.stdout)["version_id"], "effective_from": "2026-01-01",
        "created": False,
    }
    listed = json.loads(ok(run_cli("plans", "list", "--json")).stdout)
    assert [(p["id"], p["mode"], p["current_version"], p["versions"]) for p in listed] == [
        ("at-cost", "pass_through", 1, 1), ("growth", "rate_card", 1, 1), ("standard", "cost_plus", 1, 1),
    ]
    shown = json.loads(ok(run_cli("plans", "show", "growth", "--json")).stdout)
    (v1,) = shown["versions"]
    assert v1["definition"]["rates"]["streaming::nova-3"]["tiers"][0] == {"up_to": "10000", "price": "0.0090"}
    assert v1["definition"]["base_fee"] == "49.00" and v1["definition"]["included"]["sync::nova-*"] == "200"
    human = ok(run_cli("plans", "show", "growth")).stdout
    assert "in effect today" in human and "graduated: up to 10000: 0.0090" in human
    assert "at-cost" in ok(run_cli("plans", "list")).stdout


def test_a_changed_plan_is_a_new_version_from_its_effective_date(run_cli, kl_env):
    ok(run_cli("plans", "import", str(EXAMPLES / "standard.toml")))
    changed = kl_env.path / "standard.toml"
    changed.write_text(
        (EXAMPLES / "standard.toml").read_text()
        .replace('markup_percent = "25"', 'markup_percent = "30"')
        .replace("effective_from = 2026-01-01", "effective_from = 2099-01-01")
    )
    out = json.loads(ok(run_cli("plans", "import", str(changed), "--json")).stdout)
    assert (out["version"], out["effective_from"], out["created"]) == (2, "2099-01-01", True)
    shown = json.loads(ok(run_cli("plans", "show", "standard", "--json")).stdout)
    assert (shown["current_version"], shown["shown_version"]) == (1, 1)  # v2 starts in the future
    assert [v["definition"]["markup_percent"] for v in shown["versions"]] == ["25", "30"]
    v2 = json.loads(ok(run_cli("plans", "show", "standard", "--version", "2", "--json")).stdout)
    assert v2["shown_version"] == 2
    listed = json.loads(ok(run_cli("plans", "list", "--json")).stdout)
    assert (listed[0]["current_version"], listed[0]["latest_version"]) == (1, 2)


def test_errors_are_one_line_and_store_nothing(run_cli, kl_env):
    bad = kl_env.path / "growth.yaml"
    bad.write_text((EXAMPLES / "growth.yaml").read_text().replace("{up_to: 50000,", "{up_to: 5000,"))
    result = run_cli("plans", "import", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'error: {bad}:18: rates."streaming::nova-3".tiers[1].up_to: must be greater than 10000'
    ]
    floaty = kl_env.path / "f.toml"
    floaty.write_text('id = "f"\ncurrency = "USD"\nmode = "cost_plus"\nmarkup_percent = 1e3\n')
    result = run_cli("plans", "import", str(floaty))
    assert result.returncode == 1 and result.stderr.startswith(f"error: {floaty}:4: markup_percent: must be")
    assert json.loads(ok(run_cli("plans", "list", "--json")).stdout) == []
    missing = run_cli("plans", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "error: no plan 'nope' (import one with: keyledger plans import FILE)")
    assert run_cli("plans", "import", str(kl_env.path / "none.yaml")).returncode == 1
    assert run_cli("plans", "show").returncode == 2  # usage error
