"""``keyledger budgets`` / ``webhooks`` / ``sync`` as a user runs them against dgemu: the §11 contracts,
one-line errors that change nothing, and ``keyledger sync`` enforcing a revoke budget (no worker running)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from tests.service.test_budgets_enforcement import inject_minutes


@pytest.fixture
def cli(kl_env, run_cli, dgemu):
    if not kl_env.env["KEYLEDGER_DATABASE_URL"].startswith("sqlite"):
        pytest.skip("CLI contract checks run on SQLite; service tests cover PostgreSQL")
    kl_env.env.update(
        {
            "DEEPGRAM_API_KEY": dgemu.owner_key,
            "KEYLEDGER_SYNC_SETTLE_SECONDS": "0",
            "KEYLEDGER_PROVIDER_MAX_RETRIES": "1",
            "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        }
    )

    def ok(*args: str, **kw):
        res = run_cli(*args, **kw)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return json.loads(res.stdout) if "--json" in args else res.stdout

    ok("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url)
    ok("customers", "add", "Acme", "--external-id", "acme")
    ok.key = ok("keys", "create", "acme", "--json")
    return ok


def one_line_error(res, *words):
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0]


def test_budgets_set_and_list_contract(cli):
    cli("budgets", "set", "acme", "--limit", "25.50", "--thresholds", "80,50,100", "--action", "revoke")
    [row] = cli("budgets", "list", "--json")
    assert {"customer_id", "period", "limit", "spent", "thresholds", "action", "state"} <= set(row)
    assert Decimal(row["limit"]) == Decimal("25.50") and Decimal(row["spent"]) == 0
    assert row["thresholds"] == [50, 80, 100] and row["action"] == "revoke" and row["state"] == "ok"
    assert row["period"] == datetime.now(UTC).strftime("%Y-%m")
    human = cli("budgets", "list")
    assert "acme" in human and "revoke" in human


def test_bad_input_is_one_line_and_changes_nothing(cli, run_cli):
    for args, word in (
        (("--limit", "-3"), "--limit"),
        (("--limit", "ten"), "--limit"),
        (("--limit", "5", "--thresholds", "50,abc"), "--thresholds"),
        (("--limit", "5", "--action", "nuke"), "--action"),
        (("--limit", "5", "--period", "week"), "--period"),
    ):
        one_line_error(run_cli("budgets", "set", "acme", *args), word)
    one_line_error(run_cli("budgets", "set", "ghost", "--limit", "5"), "ghost")
    assert cli("budgets", "list", "--json") == []
    one_line_error(run_cli("webhooks", "add", "ftp://example.com/x"), "http")
    one_line_error(
        run_cli("webhooks", "add", "https://example.com/x", "--events", "key.exploded"), "--events"
    )
    one_line_error(run_cli("webhooks", "remove", "whe_nope"), "whe_nope")
    one_line_error(run_cli("webhooks", "replay", "msg_nope"), "msg_nope")
    assert cli("webhooks", "list", "--json") == []


def test_webhooks_add_shows_secret_once(cli, run_cli):
    ep = cli(
        "webhooks",
        "add",
        "https://hooks.example.com/kl",
        "--events",
        "key.revoked,customer.suspended",
        "--json",
    )
    assert set(ep) == {"id", "url", "events", "secret"}
    assert ep["secret"].startswith("whsec_") and ep["events"] == ["customer.suspended", "key.revoked"]
    listed = run_cli("webhooks", "list", "--json")
    human = run_cli("webhooks", "list")
    assert ep["secret"] not in listed.stdout + listed.stderr + human.stdout + human.stderr
    assert json.loads(listed.stdout)[0]["id"] == ep["id"]
    cli("webhooks", "remove", ep["id"])
    assert cli("webhooks", "list", "--json") == []


def test_sync_enforces_a_revoke_budget_without_a_worker(cli, dgemu):
    from standardwebhooks.webhooks import Webhook

    from tests.service.test_webhooks_delivery import Receiver

    receiver = Receiver()
    try:
        ep = cli("webhooks", "add", receiver.url, "--json")
        cli("budgets", "set", "acme", "--limit", "1.00", "--action", "revoke")
        inject_minutes(dgemu, cli.key["api_key_id"], 300)  # 1.29 USD
        since = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        out = cli("sync", "--since", since.isoformat(), "--json")
        assert out["runs"][0]["inserted"] == 10
        [row] = cli("budgets", "list", "--json")
        assert row["state"] == "revoked" and row["spent"].startswith("1.29")
        with httpx.Client(
            base_url=dgemu.base_url, headers={"Authorization": f"Token {cli.key['secret']}"}
        ) as c:
            assert c.post("/v1/speak", json={"text": "hi"}).status_code == 401
        cust = cli("customers", "show", "acme", "--json")
        assert cust["status"] == "suspended"
        # the sync sent what it queued: verified with an independent implementation
        types = []
        for headers, body in receiver.requests:
            Webhook(ep["secret"]).verify(body, headers)
            types.append(json.loads(body)["type"])
        assert types.count("customer.suspended") == 1 and types.count("key.revoked") == 1
        assert types.count("budget.threshold_reached") == 3
        cli("sync", "--json")  # a second sync changes nothing
        assert len(receiver.requests) == len(types)
    finally:
        receiver.close()
