"""PDF from the same template as the HTML, rendered offline by xhtml2pdf (pure Python, on reportlab).
No network: the logo is embedded as a data: URI and no external resource is referenced."""

from __future__ import annotations

import io

from keyledger.core.errors import KeyledgerError
from keyledger.invoices.render import Issuer
from keyledger.invoices.render.html import render_html


def render_pdf(doc: dict, issuer: Issuer) -> bytes:
    return html_to_pdf(render_html(doc, issuer, for_pdf=True))


def html_to_pdf(html: str) -> bytes:
    """A document's HTML (rendered ``for_pdf``) as PDF."""
    from xhtml2pdf import pisa  # imported here: it is slow to import and only PDF export needs it

    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if result.err:
        raise KeyledgerError(f"PDF rendering failed ({result.err} errors)")
    return out.getvalue()
