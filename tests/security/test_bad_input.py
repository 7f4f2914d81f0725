"""The bad-input catalogue, on SQLite and PostgreSQL: malformed plan files (YAML/TOML syntax, wrong types,
negative, NaN, infinite and float-looking huge prices), bad dates and periods (2026-13, 2026-02-30, '',
fullwidth digits), unicode, control characters and very long names and ids, huge numbers, negative
amounts (budgets, credit notes), invalid currencies and time zones. Every case: the CLI prints one line on
stderr and exits 1 (no traceback); the API answers problem+json 4xx (never 500); the database is unchanged
(a snapshot of every table before and after)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from keyledger.pricing.service import import_plan_text
from tests.security.cli_batch import run_batch
from tests.security.support import db_snapshot, snapshot_diff

GOOD_PLAN = """id: basic
name: Basic
currency: USD
mode: rate_card
effective_from: 2025-01-01
rates:
  "*::nova-3": {unit: minute, price: "0.0100"}
"""


def _plan(price: str = '"0.0100"', **over: str) -> str:
    fields = {"id": "bad", "name": "Bad", "currency": "USD", "mode": "rate_card",
              "effective_from": "2025-01-01"} | over
    head = "".join(f"{k}: {v}\n" for k, v in fields.items())
    return head + f'rates:\n  "*::nova-3": {{unit: minute, price: {price}}}\n'


PLAN_FILES = {
    "yaml-syntax.yaml": "id: bad\nname: [unclosed\n",
    "toml-syntax.toml": 'id = "bad"\nname = \n',
    "toml-types.toml": 'id = "bad"\nname = "Bad"\ncurrency = "USD"\nmode = "rate_card"\n'
                       'effective_from = 2025-01-01\nrates = 5\n',
    "not-a-mapping.yaml": "- a\n- b\n",
    "empty.yaml": "",
    "binary.yaml": "\x00\x01\x02\xff",
    "rates-a-list.yaml": _plan().replace('rates:\n  "*::nova-3": ', "rates:\n  - "),
    "price-list.yaml": _plan("[1, 2]"),
    "price-negative.yaml": _plan('"-0.0100"'),
    "price-negative-number.yaml": _plan("-0.01"),
    "price-1e400.yaml": _plan("1e400"),
    "price-1e400-string.yaml": _plan('"1e400"'),
    "price-inf.yaml": _plan(".inf"),
    "price-nan.yaml": _plan(".nan"),
    "price-nan-string.yaml": _plan('"NaN"'),
    "price-huge.yaml": _plan('"' + "9" * 80 + '"'),
    "price-too-large.yaml": _plan('"1000000000000000"'),
    "price-unicode-digits.yaml": _plan('"０.０１"'),
    "date-feb-30.yaml": _plan(effective_from="2026-02-30"),
    "date-month-13.yaml": _plan(effective_from="2026-13-01"),
    "date-empty.yaml": _plan(effective_from='""'),
    "date-fullwidth.yaml": _plan(effective_from='"２０２６-01-01"'),
    "currency-bad.yaml": _plan(currency="US$"),
    "currency-long.yaml": _plan(currency="DOLLARS"),
    "id-control.yaml": _plan(id='"a\\u0000b"'),
    "id-long.yaml": _plan(id="x" * 5000),
    "mode-unknown.yaml": _plan(mode="free_money"),
}

BAD_PERIODS = ["2026-13", "2026-00", "", "２０２６-01", "2026-1", "99999-01", "2026-02-30", "x" * 5000]
BAD_DATES = ["2026-02-30", "2026-13-01", "", "２０２６-01-01", "yesterday", "9" * 40]
BAD_AMOUNTS = ["-5", "-0.01", "1e400", "NaN", "inf", "9" * 80, "１０", "10,00", "", "0x10", "1_000"]
BAD_NAMES = ["", "\x00", "a\x00b", "\x1b[31mred", "x" * 10_000, "\u202egnp.exe", "  "]


def _one_line_error(res: dict) -> bool:
    lines = res["stderr"].strip().splitlines()
    return (res["code"] == 1 and len(lines) == 1 and lines[0].startswith("error: ")
            and "Traceback" not in res["stderr"])


@pytest.fixture
def arranged(kl_env, tmp_path):
    """A plan, a customer on it, a finalized invoice (for credit notes): through the CLI itself."""
    (tmp_path / "good.yaml").write_text(GOOD_PLAN)
    period = datetime.now(UTC).strftime("%Y-%m")
    setup = run_batch([["init"], ["plans", "import", str(tmp_path / "good.yaml")],
                       ["customers", "add", "Acme", "--external-id", "acme", "--plan", "basic"],
                       ["invoices", "run", "--period", period, "--finalize", "--json"]],
                      kl_env.env, kl_env.path)
    assert all(r["code"] == 0 for r in setup), setup
    numbers = [i["number"] for i in json.loads(setup[-1]["stdout"])["invoices"] if i.get("number")]
    return kl_env, numbers[0]


def cli_cases(plans_dir, number: str) -> list[list[str]]:
    cases: list[list[str]] = []
    for name, text in PLAN_FILES.items():
        path = plans_dir / name
        path.write_bytes(text.encode("utf-8", "surrogatepass") if name != "binary.yaml" else b"\x00\x01\xff")
        cases.append(["plans", "import", str(path)])
    cases += [["plans", "import", str(plans_dir / "missing.yaml")], ["plans", "import", str(plans_dir)]]
    for p in BAD_PERIODS:
        cases += [["invoices", "run", "--period", p], ["report", "margin", "--period", p],
                  ["invoices", "list", "--period", p]]
    for d in BAD_DATES:
        if d:  # '' : see test_cli_usage_empty_date_is_refused
            cases += [["usage", "acme", "--from", d], ["usage", "acme", "--to", d]]
    for a in BAD_AMOUNTS:
        cases += [["budgets", "set", "acme", "--limit", a],
                  ["invoices", "credit", number, "--reason", "bad input", "--amount", a]]
    cases += [["budgets", "set", "acme", "--limit", "10", "--thresholds", t]
              for t in ("-10", "50,abc", "0", "")]
    cases += [["budgets", "set", "acme", "--limit", "10", "--period", "fortnight"],
              ["budgets", "set", "acme", "--limit", "10", "--action", "explode"]]
    for n in BAD_NAMES:
        cases += [["customers", "add", n, "--external-id", "new-one"],
                  ["customers", "add", "New", "--external-id", n or "\t"],
                  ["customers", "show", n or "nobody"], ["keys", "create", n or "nobody"]]
    for cur in ("US$", "DOLLARS", "", "１２３", "\x00SD"):
        cases += [["customers", "add", "New", "--external-id", "new-one", "--currency", cur],
                  ["customers", "update", "acme", "--currency", cur]]
    for tz in ("Mars/Phobos", "", "UTC\x00", "../../etc/passwd"):
        cases.append(["customers", "update", "acme", "--timezone", tz])
    cases.append(["customers", "add", "New", "--external-id", "new-one", "--email", "x" * 10_000])
    return cases


def test_cli_bad_input_catalogue(arranged, engine, tmp_path):
    kl, number = arranged
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    cases = cli_cases(plans_dir, number)
    before = db_snapshot(engine)
    results = run_batch(cases, kl.env, kl.path)
    bad = [(argv[:2] + [a[:40] for a in argv[2:]], r["code"], r["stderr"][-300:], r["stdout"][:200])
           for argv, r in zip(cases, results, strict=True) if not _one_line_error(r)]
    assert bad == [], bad
    assert snapshot_diff(before, db_snapshot(engine)) == {}
    print(f"bad input (CLI): {len(cases)} cases, all one-line errors, exit 1, database unchanged")


def test_cli_usage_empty_date_is_refused(arranged):
    kl, _number = arranged
    results = run_batch([["usage", "acme", "--from", ""], ["usage", "acme", "--to", ""]], kl.env, kl.path)
    assert all(_one_line_error(r) for r in results), results


def api_cases(period: str, invoice_id: str) -> list[tuple[str, str, dict]]:
    """(method, path, request kwargs): each must be a 4xx problem."""
    cases: list[tuple[str, str, dict]] = []
    raw = {"headers": {"content-type": "application/json"}}
    for n in BAD_NAMES:
        cases += [("POST", "/customers", {"json": {"name": n, "external_id": "new-one"}}),
                  ("POST", "/customers", {"json": {"name": "New", "external_id": n or "\t"}}),
                  ("GET", f"/customers/{quote(n or 'nobody', safe='')}", {}),
                  ("PATCH", "/customers/acme", {"json": {"name": n}})]
    for cur in ("US$", "DOLLARS", "", "１２３", "\x00SD"):
        new = {"name": "New", "external_id": "new-one", "currency": cur}
        cases += [("POST", "/customers", {"json": new}),
                  ("PATCH", "/customers/acme", {"json": {"currency": cur}})]
    for tz in ("Mars/Phobos", "", "UTC\x00", "../../etc/passwd"):
        cases.append(("PATCH", "/customers/acme", {"json": {"timezone": tz}}))
    cases.append(("POST", "/customers", {"json": {"name": "New", "external_id": "new-one",
                                                  "email": "x" * 10_000}}))
    for a in BAD_AMOUNTS:
        cases.append(("PUT", "/customers/acme/budget", {"json": {"limit": a}}))
    for lit in ("1e400", "-1e400", "NaN", "Infinity", "-5", "9" * 400):
        cases += [("PUT", "/customers/acme/budget", {"content": f'{{"limit": {lit}}}', **raw}),
                  ("POST", "/portal-tokens", {"content": f'{{"customer_id": "acme", "ttl_seconds": {lit}}}',
                                              **raw})]
    cases += [("PUT", "/customers/acme/budget", {"json": {"limit": "10", "thresholds": t}})
              for t in ([-10], [0], [100000], ["abc"], list(range(50)))]
    cases += [("PUT", "/customers/acme/budget", {"json": {"limit": "10", "period": "fortnight"}}),
              ("PUT", "/customers/acme/budget", {"json": {"limit": "10", "action": "explode"}})]
    for p in BAD_PERIODS:
        cases += [("POST", "/invoice-runs", {"json": {"period": p}}),
                  ("GET", "/invoices", {"params": {"period": p}}),
                  ("GET", "/reconciliation", {"params": {"period": p}})]
    for d in BAD_DATES:
        cases += [("GET", "/customers/acme/usage", {"params": {"from": d}}),
                  ("GET", "/customers/acme/usage", {"params": {"to": d}}),
                  ("POST", "/sync-runs", {"json": {"since": d}})]
    for ttl in ("-5d", "0d", "9" * 30 + "d", "5 fortnights", "\x00"):
        cases.append(("POST", "/customers/acme/keys", {"json": {"ttl": ttl}}))
    cases += [("POST", "/customers/acme/keys", {"json": {"scopes": ["\x00"]}}),
              ("POST", f"/invoices/{invoice_id}/void", {"json": {"reason": "x" * 10_000}}),
              ("POST", "/customers", {"content": '{"name": ', **raw}),
              ("POST", "/customers", {"content": "\xff\xfe", **raw}),
              ("POST", "/customers", {"content": "[1, 2]", **raw}),
              ("POST", "/customers", {"json": {"name": "New", "external_id": "new-one", "plan": 5}}),
              ("GET", "/customers", {"params": {"limit": "-1"}}),
              ("GET", "/customers", {"params": {"limit": "1e400"}}),
              ("GET", "/customers", {"params": {"cursor": "\x00garbage"}}),
              ("GET", "/audit-log", {"params": {"limit": "9" * 40}})]
    return cases


def test_api_bad_input_catalogue(api):
    rt = api.runtime
    import_plan_text(rt.engine, GOOD_PLAN, name="basic.yaml", clock=rt.clock)
    api.customer("acme", plan="basic")
    period = datetime.now(UTC).strftime("%Y-%m")
    with api.client() as c:
        assert c.post("/invoice-runs", json={"period": period, "finalize": True}).status_code == 201
        invoice_id = c.get("/invoices").json()["data"][0]["id"]
        cases = api_cases(period, invoice_id)
        before = db_snapshot(rt.engine)
        bad = []
        for method, path, kw in cases:
            r = c.request(method, path, **kw)
            ok = (400 <= r.status_code < 500 and r.headers.get("content-type", "").startswith(
                "application/problem+json") and r.json().get("status") == r.status_code)
            if not ok:
                bad.append((method, path, str(kw)[:80], r.status_code, r.text[:200]))
    assert bad == [], bad
    assert snapshot_diff(before, db_snapshot(rt.engine)) == {}
    print(f"bad input (API): {len(cases)} cases, all 4xx problem+json, database unchanged")
