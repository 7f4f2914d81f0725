"""Tables for connections (Deepgram projects), customers, their Deepgram keys, key operations
(idempotency of key create/rotate/revoke) and the audit log."""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, String, Table, Text, UniqueConstraint

from keyledger.db.metadata import UTCDateTime, metadata

connections = Table(
    "connections",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # managed | byo
    Column("project_id", String(100), nullable=False),
    Column("base_url", String(500), nullable=False),
    # Either the name of an environment variable holding the key, or the key encrypted at rest.
    Column("api_key_env", String(200)),
    Column("api_key_ciphertext", LargeBinary),
    Column("customer_id", String(40)),  # byo: the customer who owns the project
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", UTCDateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("external_id", String(200), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("email", String(300)),
    Column("plan", String(100)),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("status", String(16), nullable=False, server_default="active"),  # active | suspended
    Column("billing_mode", String(16), nullable=False, server_default="managed"),  # managed | byo
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("connection_id", String(40), ForeignKey("connections.id"), nullable=False),
    Column("api_key_id", String(100), nullable=False),  # Deepgram's accessor id
    Column("secret_ciphertext", LargeBinary),
    Column("comment", Text),
    Column("scopes", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("operation_id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # active | revoked | expired
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    UniqueConstraint("connection_id", "api_key_id"),
    Index("ix_keys_customer", "customer_id"),
)

# A key operation is written (pending) before Deepgram is called, so a crash between the call and
# the commit is recovered by finding the operation id in the Deepgram key's tags.
key_operations = Table(
    "key_operations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # create | rotate | revoke
    Column("customer_id", String(40), nullable=False),
    Column("connection_id", String(40), nullable=False),
    Column("key_id", String(40)),
    Column("state", String(16), nullable=False),  # pending | done | failed
    Column("request", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_audit_log_at", "at"),
)
