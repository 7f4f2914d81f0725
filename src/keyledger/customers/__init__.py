"""Customers, connections (Deepgram projects) and customers' Deepgram keys.

Owns: customer records and their validation; connections and their credentials; key create / rotate /
revoke with crash-safe key operations (op id in the Deepgram key's tags); suspension and
reinstatement of keys; the audit log writes for all of these; re-encryption of stored secrets.
Does not own: usage sync, pricing, invoices, budgets (they call into this package, never the reverse).

Modules: ``model`` (pure types and rules), ``store`` (SQL), ``service`` (use cases), ``secrets``
(the config file's secret key and its rotation), ``cli`` (commands, mounted by ``keyledger.cli.main``).
"""
