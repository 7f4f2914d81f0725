"""End to end through the real CLI: a connection, customers and their Deepgram keys created with
``keyledger``; the keys' requests made through dgemu's data plane and log; keys rotated and revoked; then
``keyledger sync`` — every request still belongs to its customer, and reconcile matches to the cent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.usage_support import dgemu_requests, inject, ledger_rows, recomputed_rollups, rollups


def ok(res):
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return json.loads(res.stdout) if res.stdout.strip().startswith(("{", "[")) else res.stdout


def test_rotated_and_revoked_keys_keep_their_usage(kl_env, run_cli, dgemu, engine):
    env = kl_env.with_(DG_OWNER=dgemu.owner_key, KEYLEDGER_SYNC_SETTLE_SECONDS="0")
    ok(
        run_cli(
            "connections",
            "add",
            "main",
            "--project-id",
            dgemu.project_id,
            "--api-key-env",
            "DG_OWNER",
            "--base-url",
            dgemu.base_url,
            env=env,
        )
    )
    ok(run_cli("customers", "add", "Acme", "--external-id", "acme", "--json", env=env))
    ok(run_cli("customers", "add", "Beta", "--external-id", "beta", "--json", env=env))
    k_acme = ok(run_cli("keys", "create", "acme", "--json", env=env))
    k_beta = ok(run_cli("keys", "create", "beta", "--json", env=env))
    now = datetime.now(UTC)

    def traffic(api_key_id: str, n: int, seed: int) -> list[dict]:
        return [
            {
                "api_key_id": api_key_id,
                "endpoint": "listen",
                "method": "streaming",
                "model": "nova-3",
                "duration_seconds": 10 + i + seed,
                "created": (now - timedelta(minutes=30 - i % 25)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            for i in range(n)
        ]

    inject(dgemu, traffic(k_acme["api_key_id"], 40, 0) + traffic(k_beta["api_key_id"], 30, 1))
    rotated = ok(run_cli("keys", "rotate", k_acme["id"], "--json", env=env))
    new_acme = rotated.get("api_key_id") or rotated.get("new", {}).get("api_key_id")
    assert new_acme and new_acme != k_acme["api_key_id"]
    inject(dgemu, traffic(new_acme, 20, 2))
    ok(run_cli("keys", "revoke", k_beta["id"], "--json", env=env))
    inject(dgemu, traffic("operator-own-key", 5, 3))

    sync = ok(run_cli("sync", "--json", env=env))
    [run] = sync["runs"]
    assert run["inserted"] == 95 and run["unattributed"] == 5
    rows = ledger_rows(engine)
    assert {r["request_id"] for r in rows} == {r["request_id"] for r in dgemu_requests(dgemu)}
    assert rollups(engine) == recomputed_rollups(engine)
    day_from = (now - timedelta(days=1)).date().isoformat()
    acme = ok(run_cli("usage", "acme", "--from", day_from, "--by", "key", "--json", env=env))
    assert acme["requests"] == 60
    assert {x["api_key_id"] for x in acme["lines"]} == {k_acme["api_key_id"], new_acme}
    beta = ok(run_cli("usage", "beta", "--from", day_from, "--json", env=env))
    assert beta["requests"] == 30  # revoked key: its usage stays the customer's
    period = f"{now.year:04d}-{now.month:02d}"
    if (now - timedelta(minutes=31)).month == now.month:
        rec = ok(run_cli("reconcile", "--period", period, "--json", env=env))
        assert Decimal(rec["difference_usd"]) == 0 and Decimal(rec["unattributed_usd"]) > 0
        assert all(Decimal(c["attributed_usd"]) == Decimal(c["provider_usd"]) for c in rec["customers"])
