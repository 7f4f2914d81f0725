"""`keyledger demo` end to end: a real dgemu, real traffic, sync, reconciliation and invoices."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal

import httpx

from tests.conftest import free_port


def test_demo_runs_end_to_end_and_reconciles_to_the_cent(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "keyledger", "demo", "--out", str(out), "--port", str(free_port()),
         "--no-serve"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "difference 0.00" in proc.stdout
    invoices = sorted(out.glob("INV-*.json"))
    assert len(invoices) == 4
    for path in invoices:
        for fmt in ("pdf", "html", "csv"):
            assert path.with_suffix(f".{fmt}").stat().st_size > 0
        assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
        doc = json.loads(path.read_text())
        assert doc["status"] == "finalized"
        lines = sum(Decimal(line["amount"]) for line in doc["lines"])
        assert Decimal(doc["subtotal"]) == lines
        assert Decimal(doc["total"]) == Decimal(doc["subtotal"]) + Decimal(doc["tax"])
    # every customer's usage was printed, and the operator's own key shows up as unattributed
    for customer in ("acme", "globex", "initech", "umbrella"):
        assert f"{customer}: usage by line item" in proc.stdout
    assert "unattributed 0.00" not in proc.stdout
    # the BYO customer's usage is shown, not billed: its invoice holds no usage charge
    docs = [json.loads(p.read_text()) for p in invoices]
    byo = [d for d in docs if any(line.get("kind") == "byo" for line in d["lines"])]
    assert len(byo) == 1
    usage_lines = [line for line in byo[0]["lines"] if line.get("line_item")]
    assert usage_lines and all(Decimal(line["amount"]) == 0 for line in usage_lines)
    assert all(Decimal(line["provider_cost_usd"]) > 0 for line in usage_lines)
    assert "BYO: Umbrella Labs connected its own Deepgram project" in proc.stdout
    assert "browser token: POST /api/v1/customers/acme/tokens" in proc.stdout
    assert not proc.stderr.strip(), proc.stderr  # logs below WARNING stay quiet
    # a revoke budget that globex exceeded: its key stops working at dgemu; the receiver verified the events
    assert "sync -> budget revoked: globex is suspended" in proc.stdout
    assert "now gets HTTP 401 from Deepgram" in proc.stdout
    assert "0 rejected" in proc.stdout
    assert "customer.suspended" in proc.stdout and "key.revoked" in proc.stdout


def test_demo_ends_by_serving_the_dashboard_on_its_data(tmp_path):
    """Without --no-serve the demo serves the dashboard and API (dgemu still up) and prints a token."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyledger", "demo", "--out", str(tmp_path / "out"),
         "--port", str(free_port()), "--dashboard-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )
    try:
        token = None
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            found = re.search(r"sign in with the admin token (\S+)", line)
            if found:
                token = found.group(1)
                break
            assert time.monotonic() < deadline
        assert token, "the demo never printed the dashboard's sign-in token"
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        customers = httpx.get(f"{base}/api/v1/customers", headers={"Authorization": f"Bearer {token}"})
        assert customers.status_code == 200
        names = {c["external_id"] for c in customers.json()["data"]}
        assert {"acme", "globex", "initech", "umbrella"} <= names
        page = httpx.get(f"{base}/login")
        assert page.status_code == 200 and "<form" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
