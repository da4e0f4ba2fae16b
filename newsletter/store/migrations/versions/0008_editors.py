"""Editors of the desk: accounts, server-side sessions, one-time password links, the audit log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "editors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "editor_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("editor_id", sa.Integer, sa.ForeignKey("editors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_epoch", sa.Float, nullable=False),
        sa.Column("last_seen_epoch", sa.Float, nullable=False),
    )
    op.create_index("editor_sessions_by_editor", "editor_sessions", ["editor_id"])
    op.create_table(
        "password_links",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("editor_id", sa.Integer, sa.ForeignKey("editors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("expires_epoch", sa.Float, nullable=False),
    )
    op.create_index("password_links_by_editor", "password_links", ["editor_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("audit_log_by_time", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("password_links")
    op.drop_table("editor_sessions")
    op.drop_table("editors")
