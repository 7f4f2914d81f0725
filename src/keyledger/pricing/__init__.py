"""Pricing: plans (parse, validate, version), price models, and rating a period's usage under a plan.

Owns: plan files (YAML/TOML) and their validation (``plans``), the pure plan types (``model``), unit
conversions from the ledger's units (``units``), one pure module per price model (``rates/``), the pure
rating of a period's usage lines into priced lines (``rate``), plan versions in the database
(``store``, ``service``) and the ``keyledger plans`` commands (``cli``).

Does not own: usage (read from ``usage``), invoices, their numbering or their storage (``invoices``
builds on :func:`keyledger.pricing.rate.rate_usage` and :func:`keyledger.pricing.service.plan_for`).
See ``docs/pricing.md`` for the rules.
"""
