"""API keys: stored as SHA-256 hashes of their secrets, never in plain text.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
        sa.CheckConstraint("cardinality(scopes) > 0", name="api_keys_has_scopes"),
        # A SHA-256 digest is 32 bytes: the database itself refuses a plain-text secret.
        sa.CheckConstraint("octet_length(secret_hash) = 32", name="api_keys_hash_is_sha256"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
