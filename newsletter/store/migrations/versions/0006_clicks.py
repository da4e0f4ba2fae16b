"""What readers read: click counts per story, salts and hashed readers (anonymous), per-reader history (individual).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "click_totals",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("place", sa.Integer, primary_key=True),
        sa.Column("clicks", sa.Integer, nullable=False),
        sa.Column("machine_clicks", sa.Integer, nullable=False),
        sa.Column("unique_readers", sa.Integer, nullable=False),
    )
    op.create_table(
        "click_salts",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("created_epoch", sa.Float, nullable=False),
    )
    op.create_index("click_salts_by_age", "click_salts", ["created_epoch"])
    op.create_table(
        "click_readers",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("place", sa.Integer, primary_key=True),
        sa.Column("reader_hash", sa.String(64), primary_key=True),
    )
    op.create_table(
        "click_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
        sa.Column("place", sa.Integer, nullable=False),
        sa.Column("machine", sa.Boolean, nullable=False),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("click_history_by_subscriber", "click_history", ["subscriber_id"])
    op.create_index("click_history_by_issue", "click_history", ["issue_id", "place"])


def downgrade() -> None:
    op.drop_table("click_history")
    op.drop_table("click_readers")
    op.drop_table("click_salts")
    op.drop_table("click_totals")
