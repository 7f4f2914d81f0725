"""Documents from one template: HTML (autoescaped, logo embedded, DRAFT watermark only on drafts), PDF
rendered offline from the same HTML (text checked with pypdf), CSV rows and totals, JSON."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image
from pypdf import PdfReader

from keyledger.core.errors import Invalid
from keyledger.invoices.render import Issuer, render, render_credit_note


def doc(status="finalized", **more):
    return {
        "id": "inv_1",
        "number": None if status == "draft" else "INV-2026-000042",
        "status": status,
        "customer_id": "cus_1",
        "period": "2026-01",
        "currency": "USD",
        "subtotal": "15.30",
        "tax": "3.06",
        "total": "18.36",
        "tax_percent": "20",
        "provider_cost_usd": "1.2",
        "exchange_rate": "1",
        "customer": {
            "id": "cus_1",
            "external_id": "acme",
            "name": "Acme <script>alert(1)</script>",
            "email": "ap@acme.test",
        },
        "plan": {"id": "tiered", "version": 2, "version_id": "plv_1"},
        "period_start": "2026-01-01",
        "period_end": "2026-02-01",
        "timezone": "Europe/Paris",
        "issued_on": None if status == "draft" else "2026-02-02",
        "due_on": None if status == "draft" else "2026-03-04",
        "void_reason": None,
        "credit_notes": [],
        "lines": [
            {
                "description": "streaming::nova-3, graduated tier 1 (per min)",
                "line_item": "streaming::nova-3",
                "unit": "minute",
                "quantity": "100",
                "unit_price": "0.02",
                "amount": "2.00",
                "provider_cost_usd": "0.43",
                "kind": "usage",
                "rate": "streaming::nova-3",
                "late_adjustment": False,
                "late_period": None,
            },
            {
                "description": "Tiered base fee, 2026-01",
                "line_item": None,
                "unit": None,
                "quantity": "1",
                "unit_price": "10",
                "amount": "10.00",
                "provider_cost_usd": "0",
                "kind": "base_fee",
                "rate": None,
                "late_adjustment": False,
                "late_period": None,
            },
            {
                "description": "Late usage from 2025-12: sync::nova-3",
                "line_item": "sync::nova-3",
                "unit": "minute",
                "quantity": "660",
                "unit_price": "0.005",
                "amount": "3.30",
                "provider_cost_usd": "0.77",
                "kind": "usage",
                "rate": "sync::*",
                "late_adjustment": True,
                "late_period": "2025-12",
            },
        ],
        **more,
    }


ISSUER = Issuer("Example Voice Co.", "1 Market Street\nSan Francisco, CA")


def test_html_has_every_part_and_escapes_user_text(tmp_path):
    logo = tmp_path / "logo.png"
    Image.new("RGB", (60, 20), (16, 42, 67)).save(logo)
    html = render(doc(), "html", Issuer(ISSUER.name, ISSUER.address, str(logo))).decode()
    for text in (
        "INV-2026-000042",
        "2026-02-02",
        "2026-03-04",
        "Example Voice Co.",
        "San Francisco, CA",
        "ap@acme.test",
        "2026-01-01",
        "0.02",
        "100",
        "10.00",
        "15.30",
        "3.06",
        "18.36",
        "LATE ADJUSTMENT (2025-12)",
        "Late usage from 2025-12",
        "data:image/png;base64,",
    ):
        assert text in html, text
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "DRAFT" not in html
    draft = render(doc("draft"), "html", ISSUER).decode()
    assert "DRAFT INVOICE" in draft and 'class="watermark-html">DRAFT<' in draft


def test_pdf_is_made_offline_from_the_same_template():
    pdf = render(doc(), "pdf", ISSUER)
    assert pdf.startswith(b"%PDF-")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    for part in (
        "INV-2026-000042",
        "18.36",
        "Late usage from 2025-12",
        "LATE ADJUSTMENT",
        "Example Voice Co.",
    ):
        assert part in text, part
    assert "DRAFT" not in text
    draft = "".join(
        p.extract_text() for p in PdfReader(io.BytesIO(render(doc("draft"), "pdf", ISSUER))).pages
    )
    assert "DRAFT" in draft and "not yet numbered" in draft


def test_csv_rows_and_totals():
    rows = list(csv.DictReader(io.StringIO(render(doc(), "csv", ISSUER).decode())))
    assert [r["kind"] for r in rows] == ["usage", "base_fee", "usage", "subtotal", "tax", "total"]
    assert [r["amount"] for r in rows] == ["2.00", "10.00", "3.30", "15.30", "3.06", "18.36"]
    assert rows[2]["late_adjustment"] == "true" and rows[2]["late_period"] == "2025-12"
    assert {r["invoice"] for r in rows} == {"INV-2026-000042"}


def test_json_is_the_show_object_and_unknown_formats_are_refused():
    assert json.loads(render(doc(), "json", ISSUER)) == doc()
    with pytest.raises(Invalid, match="format"):
        render(doc(), "docx", ISSUER)
    with pytest.raises(Invalid, match="operator_logo_path"):
        render(doc(), "html", Issuer("X", "", "/nonexistent/logo.png"))


def credit_note(lines=()):
    return {
        "id": "crn_1", "number": "CN-2026-000007", "invoice_id": "inv_1", "invoice_number": "INV-2026-000042",
        "customer_id": "cus_1", "currency": "USD", "subtotal": "2.00", "tax": "0.40", "total": "2.40",
        "reason": "Outage <b>on</b> the 3rd", "lines": list(lines), "issued_at": "2026-02-10T09:00:00+00:00",
        "issued_on": "2026-02-10", "customer": doc()["customer"], "period": "2026-01",
        "period_start": "2026-01-01", "period_last_day": "2026-01-31", "tax_percent": "20",
    }


def test_credit_note_html_and_pdf_share_the_invoice_frame():
    html = render_credit_note(credit_note(), "html", ISSUER).decode()
    for part in ("CREDIT NOTE", "CN-2026-000007", "INV-2026-000042", "Credit against invoice INV-2026-000042",
                 "2026-02-10", "2026-01-01 – 2026-01-31", "Total credited", "2.40 USD", "Tax (20%)",
                 "Example Voice Co.", "Credit to"):
        assert part in html, part
    assert "Outage &lt;b&gt;on&lt;/b&gt; the 3rd" in html and "<script>" not in html  # escaped user text
    assert "DRAFT" not in html and "INVOICE" not in html
    by_line = render_credit_note(
        credit_note([{"position": 2, "description": "Base fee", "amount": "2.00"}]), "html", ISSUER
    ).decode()
    assert "Line 2 of invoice INV-2026-000042: Base fee" in by_line and "Credit against" not in by_line
    pdf = render_credit_note(credit_note(), "pdf", ISSUER)
    assert pdf.startswith(b"%PDF-")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    for part in ("CREDIT NOTE", "CN-2026-000007", "INV-2026-000042", "2.40", "Example Voice Co."):
        assert part in text, part
    assert json.loads(render_credit_note(credit_note(), "json", ISSUER)) == credit_note()
    with pytest.raises(Invalid, match="format"):
        render_credit_note(credit_note(), "csv", ISSUER)
