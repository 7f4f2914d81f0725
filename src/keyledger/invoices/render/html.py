"""HTML: the Jinja2 templates (autoescaped) that the PDFs are also made from."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, select_autoescape

from keyledger.invoices.render import Issuer

UNIT_LABELS = {
    "minute": "min",
    "second": "s",
    "hour": "h",
    "agent_minute": "agent min",
    "agent_hour": "agent h",
    "character": "chars",
    "1k_characters": "1k chars",
    "1m_characters": "1M chars",
    "token": "tokens",
    "1k_tokens": "1k tokens",
    "1m_tokens": "1M tokens",
}


@cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("keyledger.invoices.render", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(doc: dict, issuer: Issuer, *, for_pdf: bool = False) -> str:
    return (
        _env()
        .get_template("invoice.html.j2")
        .render(
            inv=doc,
            issuer=issuer,
            logo=issuer.logo_data_uri(),
            for_pdf=for_pdf,
            units=UNIT_LABELS,
            draft=doc["status"] == "draft",
        )
    )


def render_credit_note_html(note: dict, issuer: Issuer, *, for_pdf: bool = False) -> str:
    return (
        _env()
        .get_template("credit_note.html.j2")
        .render(note=note, issuer=issuer, logo=issuer.logo_data_uri(), for_pdf=for_pdf, draft=False)
    )
