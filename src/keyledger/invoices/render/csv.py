"""CSV export: a header row, one row per line, then subtotal / tax / total rows (amounts exact)."""

from __future__ import annotations

import csv
import io

COLUMNS = (
    "invoice",
    "status",
    "period",
    "customer",
    "currency",
    "position",
    "kind",
    "description",
    "line_item",
    "unit",
    "quantity",
    "unit_price",
    "amount",
    "provider_cost_usd",
    "late_adjustment",
    "late_period",
)


def render_csv(doc: dict) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    head = [
        doc["number"] or doc["id"],
        doc["status"],
        doc["period"],
        doc["customer"]["external_id"],
        doc["currency"],
    ]
    for i, line in enumerate(doc["lines"], start=1):
        w.writerow(
            [
                *head,
                i,
                line["kind"],
                line["description"],
                line["line_item"] or "",
                line["unit"] or "",
                line["quantity"] or "",
                line["unit_price"] or "",
                line["amount"],
                line["provider_cost_usd"],
                "true" if line["late_adjustment"] else "false",
                line["late_period"] or "",
            ]
        )
    for label in ("subtotal", "tax", "total"):
        w.writerow([*head, "", label, label.capitalize(), "", "", "", "", doc[label], "", "", ""])
    return buf.getvalue().encode()
