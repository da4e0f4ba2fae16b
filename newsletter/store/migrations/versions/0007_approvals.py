"""Approval of the day's issue by an editor: the frozen issue's hash, the editorial version, who and when.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("issue_date", sa.String(10), primary_key=True),
        sa.Column("html_sha256", sa.String(64), nullable=False),
        sa.Column("editorial_version", sa.String(32), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approvals")
