"""Signup counts per client and window, shared by every worker of `newsletter serve`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_counts",
        sa.Column("bucket", sa.String(100), primary_key=True),
        sa.Column("window", sa.Integer, primary_key=True),
        sa.Column("hits", sa.Integer, nullable=False),
    )
    op.create_index("rate_counts_by_window", "rate_counts", ["window"])


def downgrade() -> None:
    op.drop_table("rate_counts")
