"""`keyledger invoices …` and `keyledger report margin` as a user runs them, end to end: real CLI
subprocesses, a real dgemu over HTTP (keys created through it, traffic injected, usage synced), on SQLite
and PostgreSQL. Checks the §11 JSON contracts, late usage, documents, and one-line errors that change
nothing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.usage_support import inject

# Deepgram keeps 90 days of request logs, so the scenario bills the calendar month that held the day 40
# days ago (P): it started at most 71 days ago and ended at least 9 days ago.
_ref = datetime.now(UTC) - timedelta(days=40)
P_START = datetime(_ref.year, _ref.month, 1, tzinfo=UTC)
P_END = datetime(_ref.year + (_ref.month == 12), _ref.month % 12 + 1, 1, tzinfo=UTC)
P, NEXT = P_START.strftime("%Y-%m"), P_END.strftime("%Y-%m")


def ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


PLAN = """
id: starter
name: Starter
currency: USD
mode: rate_card
base_fee: "5.00"
tax_percent: "20"
effective_from: 2025-01-01
rates:
  "*::nova-3": {unit: minute, price: "0.0100"}
  "*::aura-2*": {unit: 1k_characters, price: "0.0300"}
"""


def ok(res, json_out: bool = True):
    assert res.returncode == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout) if json_out else res.stdout


def fails(res, *words: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def world(kl_env, run_cli, dgemu):
    kl_env.env["DEEPGRAM_API_KEY"] = dgemu.owner_key
    kl_env.env["KEYLEDGER_SYNC_SETTLE_SECONDS"] = "0"
    kl_env.env["KEYLEDGER_SYNC_WINDOW_DAYS"] = "31"
    kl_env.env["KEYLEDGER_OPERATOR_ADDRESS"] = "1 Market Street\nSan Francisco"
    plan = kl_env.path / "starter.yaml"
    plan.write_text(PLAN)
    ok(run_cli("plans", "import", str(plan)), json_out=False)
    ok(run_cli("connections", "add", "main", "--project-id", dgemu.project_id, "--base-url", dgemu.base_url,
               "--json"))  # fmt: skip
    cust = {}
    for ext, tz in (("acme", "UTC"), ("nyc", "America/New_York")):
        c = ok(run_cli("customers", "add", ext.upper(), "--external-id", ext, "--plan", "starter",
                       "--timezone", tz, "--json"))  # fmt: skip
        key = ok(run_cli("keys", "create", ext, "--json"))
        cust[ext] = (c["id"], key["api_key_id"])
    ok(run_cli("customers", "add", "No Plan", "--external-id", "noplan", "--json"))
    return cust


def traffic(dgemu, accessor: str, created: str, seconds: int, model: str = "nova-3") -> dict:
    return {
        "api_key_id": accessor,
        "created": created,
        "endpoint": "listen",
        "method": "sync",
        "model": model,
        "duration_seconds": seconds,
    }


def sync(run_cli) -> None:
    ok(run_cli("sync", "--since", (P_START - timedelta(days=2)).date().isoformat(), "--json"))


def test_run_show_finalize_export_late_usage_and_margin(world, run_cli, dgemu, kl_env):
    acme, nyc = world["acme"][1], world["nyc"][1]
    inject(
        dgemu,
        [
            traffic(dgemu, acme, ts(P_START + timedelta(days=4, hours=10)), 600),
            traffic(dgemu, acme, ts(P_START + timedelta(days=19, hours=10)), 1200),
            traffic(dgemu, nyc, ts(P_START + timedelta(days=9, hours=10)), 300),
            traffic(dgemu, nyc, ts(P_END + timedelta(hours=2)), 120),  # still the last day of P in New York
            traffic(dgemu, acme, ts(P_END + timedelta(days=2, hours=10)), 60),
        ],
    )
    sync(run_cli)
    res = run_cli("invoices", "run", "--period", P, "--json")
    assert res.returncode == 0, res.stderr
    assert "warning: customer noplan skipped: no plan" in res.stderr
    rep = json.loads(res.stdout)
    assert [(e["customer"], e["outcome"]) for e in rep["invoices"]] == [
        ("acme", "created"),
        ("noplan", "skipped"),
        ("nyc", "created"),
    ]

    listed = ok(run_cli("invoices", "list", "--json"))
    assert all(
        set(i) == {"id", "number", "status", "customer_id", "period", "currency", "total"} for i in listed
    )
    by_customer = {i["customer_id"]: i for i in listed}
    a_id = by_customer[world["acme"][0]]["id"]
    n_id = by_customer[world["nyc"][0]]["id"]

    doc = ok(run_cli("invoices", "show", a_id, "--json"))
    assert {
        "id",
        "number",
        "status",
        "customer_id",
        "period",
        "currency",
        "subtotal",
        "tax",
        "total",
        "lines",
    } <= set(doc)
    assert (doc["status"], doc["number"], doc["period"], doc["currency"]) == ("draft", None, P, "USD")
    usage = [ln for ln in doc["lines"] if ln["line_item"]]
    assert [(ln["line_item"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in usage] == [
        ("sync::nova-3", "30", "0.01", "0.30")
    ]
    assert {
        "description",
        "line_item",
        "unit",
        "quantity",
        "unit_price",
        "amount",
        "provider_cost_usd",
    } <= set(usage[0])
    # Amounts are exact decimal strings; total = subtotal + tax = lines + 20 %.
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("5.30", "1.06", "6.36")
    assert Decimal(usage[0]["provider_cost_usd"]) > 0
    nyc_doc = ok(run_cli("invoices", "show", n_id, "--json"))
    assert [ln["quantity"] for ln in nyc_doc["lines"] if ln["line_item"]] == ["7"]  # 5 + 2 minutes

    fin = ok(run_cli("invoices", "finalize", a_id, "--json"))
    assert re.fullmatch(r"INV-\d{4}-000001", fin["number"]) and fin["status"] == "finalized"
    assert fin["issued_on"] and fin["due_on"]
    number = fin["number"]
    assert ok(run_cli("invoices", "show", number, "--json"))["id"] == a_id  # by number too

    # Late usage for January arrives after January was finalized: it lands on February, marked.
    inject(dgemu, [traffic(dgemu, acme, ts(P_START + timedelta(days=26, hours=10)), 180)])
    sync(run_cli)
    again = ok(run_cli("invoices", "run", "--period", P, "--customer", "acme", "--json"))
    assert again["invoices"][0]["outcome"] == "unchanged"
    assert ok(run_cli("invoices", "show", a_id, "--json")) == ok(
        run_cli("invoices", "show", number, "--json")
    )
    feb = ok(run_cli("invoices", "run", "--period", NEXT, "--customer", "acme", "--finalize", "--json"))
    [entry] = feb["invoices"]
    assert entry["outcome"] == "finalized" and entry["number"].endswith("-000002")
    feb_doc = ok(run_cli("invoices", "show", entry["number"], "--json"))
    late = [ln for ln in feb_doc["lines"] if ln["late_adjustment"]]
    assert [(ln["description"], ln["quantity"], ln["amount"]) for ln in late] == [
        (f"Late usage from {P}: sync::nova-3", "3", "0.03")
    ]
    human = ok(run_cli("invoices", "show", entry["number"]), json_out=False)
    assert f"[late] Late usage from {P}" in human

    # Documents.
    out = kl_env.path / "inv.pdf"
    ok(run_cli("invoices", "export", number, "--format", "pdf", "--out", str(out)), json_out=False)
    assert out.read_bytes().startswith(b"%PDF-")
    html = ok(run_cli("invoices", "export", entry["number"], "--format", "html"), json_out=False)
    assert entry["number"] in html and f"LATE ADJUSTMENT ({P})" in html and "San Francisco" in html
    draft_html = ok(run_cli("invoices", "export", n_id, "--format", "html"), json_out=False)
    assert "DRAFT" in draft_html
    csv_text = ok(run_cli("invoices", "export", number, "--format", "csv"), json_out=False)
    rows = csv_text.strip().splitlines()
    assert rows[0].startswith("invoice,status,period") and rows[-1].endswith(",total,Total,,,,,6.36,,,")
    assert json.loads(
        ok(run_cli("invoices", "export", number, "--format", "json"), json_out=False)
    ) == doc | {k: fin[k] for k in ("number", "status", "issued_on", "due_on", "finalized_at")}

    # Paid, void, credit.
    assert ok(run_cli("invoices", "mark-paid", number, "--json"))["status"] == "paid"
    note = ok(run_cli("invoices", "credit", number, "--amount", "1.00", "--reason", "outage", "--json"))
    assert (note["subtotal"], note["tax"], note["total"]) == ("1.00", "0.20", "1.20")
    assert re.fullmatch(r"CN-\d{4}-000001", note["number"])
    shown = ok(run_cli("invoices", "credit-note", note["number"], "--json"))
    assert shown == shown | note and shown["customer"]["external_id"] == "acme" and shown["period"] == P
    assert note["number"] in ok(run_cli("invoices", "credit-note", note["id"]), json_out=False)
    out = kl_env.path / "credit-note.pdf"
    wrote = run_cli("invoices", "credit-note", note["number"], "--format", "pdf", "--out", str(out))
    assert "wrote" in ok(wrote, json_out=False)
    assert out.read_bytes().startswith(b"%PDF-") and not out.with_name("credit-note.pdf.part").exists()
    html = ok(run_cli("invoices", "credit-note", note["number"], "--format", "html"), json_out=False)
    assert "CREDIT NOTE" in html and number in html and "outage" in html
    fails(run_cli("invoices", "credit-note", "CN-2000-000001"), "not found")
    fails(run_cli("invoices", "credit-note", note["number"], "--format", "csv"), "--format")
    fails(run_cli("invoices", "credit-note", note["number"], "--out", str(out)), "--format")
    n_fin = ok(run_cli("invoices", "finalize", n_id, "--json"))
    voided = ok(run_cli("invoices", "void", n_fin["number"], "--reason", "test", "--json"))
    assert voided["status"] == "void" and voided["number"] == n_fin["number"]

    # Margin.
    margin = ok(run_cli("report", "margin", "--period", P, "--json"))
    assert margin["period"] == P
    [row] = margin["customers"]  # the void invoice is left out
    assert row["customer_id"] == world["acme"][0] and row["amount"] == "5.30"
    assert Decimal(row["margin"]) == Decimal("5.30") - Decimal(row["provider_cost_usd"])
    assert {ln["line_item"] for ln in row["lines"]} == {"sync::nova-3", "(base fee)"}
    assert f"Margin {P}" in ok(run_cli("report", "margin", "--period", P), json_out=False)


def test_bad_input_is_one_line_exit_1_and_changes_nothing(world, run_cli):
    ok(run_cli("invoices", "run", "--period", P, "--customer", "acme", "--json"))
    [inv] = ok(run_cli("invoices", "list", "--json"))
    before = ok(run_cli("invoices", "show", inv["id"], "--json"))
    fails(run_cli("invoices", "run", "--period", "2026-13"), "YYYY-MM")
    fails(run_cli("invoices", "run", "--period", NEXT, "--customer", "ghost"), "ghost")
    fails(run_cli("invoices", "run", "--period", NEXT, "--customer", "noplan"), "no plan")
    fails(run_cli("invoices", "run", "--period", NEXT, "--shard", "2/2"), "shard", "I/N")
    fails(run_cli("invoices", "show", "INV-2026-999999"), "not found")
    fails(run_cli("invoices", "mark-paid", inv["id"]), "cannot mark-paid", "draft")
    fails(run_cli("invoices", "void", inv["id"]), "cannot void")
    fails(run_cli("invoices", "credit", inv["id"], "--reason", "x"), "cannot credit")
    fails(run_cli("invoices", "export", inv["id"], "--format", "docx"), "--format")
    fails(run_cli("report", "margin", "--period", "January"), "YYYY-MM")
    assert ok(run_cli("invoices", "list", "--json")) == [inv]
    assert ok(run_cli("invoices", "show", inv["id"], "--json")) == before
    fin = ok(run_cli("invoices", "finalize", inv["id"], "--json"))
    fails(run_cli("invoices", "finalize", inv["id"]), "already finalized")
    fails(run_cli("invoices", "credit", fin["number"], "--amount", "99", "--reason", "x"), "exceeds")
    assert ok(run_cli("invoices", "show", inv["id"], "--json")) == fin
    assert run_cli("invoices", "run").returncode == 2  # usage error: --period missing
