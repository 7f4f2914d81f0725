"""Imports every table module so the one MetaData knows all tables (for migrations and tests)."""

from keyledger.db import tables_customers, tables_invoices, tables_pricing, tables_usage  # noqa: F401
