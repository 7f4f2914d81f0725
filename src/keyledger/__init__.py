"""keyledger: customer-managed billing for apps built on the Deepgram API.

Data flows one way: provider -> usage ledger -> pricing -> invoices -> exports/webhooks.
See docs/architecture.md for the layers and what each package owns.
"""

__version__ = "0.1.0"
