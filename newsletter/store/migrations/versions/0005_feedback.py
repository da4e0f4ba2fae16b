"""Delivery feedback: bounces and complaints reported after the send, one row per report and reader.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("issue_date", sa.String(10)),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("report_id", sa.String(250), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("report_id", "subscriber_id", name="one_feedback_per_report_and_reader"),
        sqlite_autoincrement=True,
    )
    op.create_index("feedback_by_subscriber", "feedback", ["subscriber_id", "kind"])
    op.create_index("feedback_by_issue", "feedback", ["issue_date", "kind"])


def downgrade() -> None:
    op.drop_table("feedback")
