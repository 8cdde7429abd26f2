"""Data protection: erasure records, and a suppression list that keeps no address.

- ``erasures``: one row per erasure of a customer (``tenure customers erase``,
  ``DELETE /v1/customers/{id}``): the SHA-256 of the customer id (never the id), the
  pseudonym its anonymised journeys now carry, who asked, when, how many rows each
  table lost, and when scoring confirmed its own erasure (its tombstone on ``scores``).
- ``suppressions`` keyed by the SHA-256 of the normalised address instead of the
  address: an unsubscribe holds for an erased customer without keeping the address.
  Existing rows are converted in place.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("erasure_id", sa.Text, primary_key=True),
        sa.Column("customer_hash", sa.Text, nullable=False),
        sa.Column("pseudonym", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("erased_at", TS, nullable=False),
        sa.Column("removed", JSONB, nullable=False, server_default="{}"),
        sa.Column("scoring_erased_at", TS),
    )
    op.create_index("erasures_customer", "erasures", ["customer_hash", "erased_at"])
    op.alter_column("suppressions", "address", new_column_name="address_hash")
    op.execute(
        "UPDATE suppressions SET address_hash = "
        "encode(sha256(convert_to(lower(btrim(address_hash)), 'UTF8')), 'hex')"
    )


def downgrade() -> None:
    # The addresses cannot be recovered from their hashes: the list is emptied.
    op.execute("DELETE FROM suppressions")
    op.alter_column("suppressions", "address_hash", new_column_name="address")
    op.drop_index("erasures_customer", table_name="erasures")
    op.drop_table("erasures")
