"""Double opt-in dates, the GDPR suppression list, send runs with heartbeats; ids never reused.

Databases made before migrations existed may hold any part of this already (the schema grew
commit by commit through create_all), so each step is taken only where it is missing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_SUBSCRIBER_COLUMNS = ("confirmation_sent_at", "confirmed_at", "unsubscribed_at")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    present = {column["name"] for column in inspector.get_columns("subscribers")}
    # On SQLite the table is rebuilt with AUTOINCREMENT, so that an id, and the
    # unsubscribe links signed with it, never passes to a later reader.
    with op.batch_alter_table("subscribers", recreate="auto" if op.get_bind().dialect.name != "sqlite"
                              else "always", table_kwargs={"sqlite_autoincrement": True}) as batch:
        for name in NEW_SUBSCRIBER_COLUMNS:
            if name not in present:
                batch.add_column(sa.Column(name, sa.DateTime(timezone=True)))
    if "suppressions" not in tables:
        op.create_table(
            "suppressions",
            sa.Column("email_hash", sa.String(64), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "send_runs" not in tables:
        op.create_table(
            "send_runs",
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
            sa.Column("owner", sa.String(200), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True)),
        )


def downgrade() -> None:
    op.drop_table("send_runs")
    op.drop_table("suppressions")
    with op.batch_alter_table("subscribers") as batch:
        for name in NEW_SUBSCRIBER_COLUMNS:
            batch.drop_column(name)
