"""How the list grew: signups, confirmations, unsubscribes and bounces counted per quarter hour (list_changes).

Nothing before this revision can be counted honestly (a reader's dates are overwritten when they sign
up again and erased when they are forgotten; a bounce has no date), so the table starts empty.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "list_changes",
        sa.Column("quarter", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("list_changes")
