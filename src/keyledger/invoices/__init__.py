"""Invoices: one per customer per period, built from the usage ledger and the customer's plan.

Owns: invoice states and transitions (``model``), the ordered pure steps that turn rated usage and late
usage into invoice lines and totals (``calc``), gapless numbering (``numbering``), SQL (``store``), the
use cases run / finalize / void / mark-paid / credit / margin report (``service``), documents
(``render``: HTML and PDF from one Jinja2 template, CSV, JSON) and the ``invoices`` and ``report`` CLI.

Does not own: usage (the ledger, ``keyledger.usage``), prices (``keyledger.pricing`` rates; invoices
only call ``rate_usage`` / ``plan_for`` / ``get_plan_version``), customers. Immutability of finalized
invoices is enforced below this package, by database triggers (migration 0003).
"""
