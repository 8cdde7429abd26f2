"""Every table read by customer has an index that starts with the customer id.

A customer's export and erasure (``tenure customers export|erase``, the operator API)
read, delete or pseudonymise its rows in every table that holds them. Five tables had
no whole index for it, so each of those statements read the whole table, and most grow
with every message sent: ``deliveries`` (the notifier's log, one row per notification),
``message_outcomes`` (one row per reported status), ``attributions``,
``journey_messages`` and ``held_triggers`` (whose customer indexes are partial: the
frequency cap's, the pending triggers').

The indexes are built ``CONCURRENTLY`` (outside the migration's transaction): a plain
build would block every insert into ``deliveries`` while it runs, and the migration Job
runs while the previous release is still sending. If a build fails, PostgreSQL leaves an
invalid index behind: drop it (``DROP INDEX CONCURRENTLY <name>``) and run the
migration again.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

INDEXES = {
    "deliveries_customer": "deliveries",
    "message_outcomes_customer": "message_outcomes",
    "attributions_customer": "attributions",
    "journey_messages_customer": "journey_messages",
    "held_triggers_customer": "held_triggers",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table in INDEXES.items():
            op.create_index(name, table, ["customer_id"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table in INDEXES.items():
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
