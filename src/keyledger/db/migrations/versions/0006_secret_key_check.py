"""secrets: the secret-key check (a canary ciphertext proving the configured key is the database's)

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-27 02:40:00

A branch off 0003 (like 0004 and 0005); ``migrate.upgrade`` applies every head.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = ("secrets",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_key_check",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("canary", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_key_check")),
    )


def downgrade() -> None:
    op.drop_table("secret_key_check")
