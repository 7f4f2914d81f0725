"""The secret-key check: one canary ciphertext sealed with the configured secret key, so a process started
with a different key refuses to run instead of failing (or mis-decrypting) on the first stored secret."""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, String, Table

from keyledger.db.metadata import UTCDateTime, metadata

secret_key_check = Table(
    "secret_key_check",
    metadata,
    Column("id", String(16), primary_key=True),  # always "canary": one row
    Column("canary", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
