"""Budgets: per-customer spend caps per period with alert thresholds, a projected-spend alert and an
action at 100 % (notify, or revoke the customer's Deepgram keys and suspend the customer)."""
