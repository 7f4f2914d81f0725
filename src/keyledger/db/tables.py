"""Imports every table module so the one MetaData knows all tables (for migrations and tests)."""

from keyledger.db import (  # noqa: F401
    tables_api,
    tables_budgets,
    tables_customers,
    tables_invoices,
    tables_notifications,
    tables_pricing,
    tables_secrets,
    tables_usage,
)
