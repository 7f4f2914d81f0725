"""Documents: an invoice as HTML and PDF from one Jinja2 template (``templates/invoice.html.j2``), CSV and
JSON; a credit note as HTML, PDF (``templates/credit_note.html.j2``) and JSON. Both templates extend
``templates/_document.html.j2`` (page, style, issuer, title, footer).

Every renderer takes a document of :class:`keyledger.invoices.service.InvoiceService` (``get`` /
``credit_note``: amounts already as exact decimal strings) and an :class:`Issuer` (the operator, from
settings).
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from keyledger.core.errors import Invalid

FORMATS = ("pdf", "html", "csv", "json")
CREDIT_NOTE_FORMATS = ("pdf", "html", "json")


@dataclass(frozen=True)
class Issuer:
    name: str
    address: str = ""
    logo_path: str | None = None

    def logo_data_uri(self) -> str | None:
        """The logo embedded as a data: URI (documents fetch nothing, offline or not)."""
        if not self.logo_path:
            return None
        path = Path(self.logo_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Invalid(f"operator_logo_path {self.logo_path}: {exc.strerror}") from None
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"

    @classmethod
    def from_settings(cls, settings) -> Issuer:
        return cls(settings.operator_name, settings.operator_address or "", settings.operator_logo_path)


def render(doc: dict, fmt: str, issuer: Issuer) -> bytes:
    if fmt == "json":
        from keyledger.invoices.render.json import render_json

        return render_json(doc)
    if fmt == "csv":
        from keyledger.invoices.render.csv import render_csv

        return render_csv(doc)
    if fmt == "html":
        from keyledger.invoices.render.html import render_html

        return render_html(doc, issuer).encode()
    if fmt == "pdf":
        from keyledger.invoices.render.pdf import render_pdf

        return render_pdf(doc, issuer)
    raise Invalid(f"format {fmt!r}: use one of {', '.join(FORMATS)}")


def render_credit_note(note: dict, fmt: str, issuer: Issuer) -> bytes:
    """A credit note document (:meth:`~keyledger.invoices.service.InvoiceService.credit_note`)."""
    if fmt == "json":
        from keyledger.invoices.render.json import render_json

        return render_json(note)
    if fmt in ("html", "pdf"):
        from keyledger.invoices.render.html import render_credit_note_html

        if fmt == "html":
            return render_credit_note_html(note, issuer).encode()
        from keyledger.invoices.render.pdf import html_to_pdf

        return html_to_pdf(render_credit_note_html(note, issuer, for_pdf=True))
    raise Invalid(f"format {fmt!r}: a credit note is one of {', '.join(CREDIT_NOTE_FORMATS)}")
