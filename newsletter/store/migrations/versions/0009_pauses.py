"""Readers manage their subscription: a pause (subscribers.paused_until) and address changes waiting for
the new address to confirm.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("paused_until", sa.String(10)))
    op.create_table(
        "address_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("new_email", sa.String(320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("address_changes_by_subscriber", "address_changes", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("address_changes")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("paused_until")
