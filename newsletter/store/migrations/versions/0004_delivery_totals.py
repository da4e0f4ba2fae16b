"""Per-issue delivery totals, so old issues' per-reader rows can be folded away.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("log_folded_at", sa.DateTime(timezone=True)))
    op.create_table(
        "delivery_totals",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("outcome", sa.String(20), primary_key=True),
        sa.Column("reply", sa.Text, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("delivery_totals")
    with op.batch_alter_table("issues") as batch:
        batch.drop_column("log_folded_at")
