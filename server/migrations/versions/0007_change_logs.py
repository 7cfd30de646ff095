"""change logs for the post-event report: every decision change and every alert change/acknowledgement

Revision ID: 0007_change_logs
Revises: 0006_event_timezone
Create Date: 2026-12-01

- ``decision_changes``: each change of an event's overflow decision (state, freeze, override and who);
- ``alert_changes``: each alert raised / changed / cleared, and each acknowledgement with who.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_change_logs"
down_revision = "0006_event_timezone"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "decision_changes",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(length=64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("previous", sa.String(length=32), nullable=True),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("reversed_from", sa.String(length=32), nullable=True),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=False),
    )
    op.create_index("ix_decision_changes_event_id", "decision_changes", ["event_id"])
    op.create_table(
        "alert_changes",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(length=255), nullable=False),
        sa.Column("venue_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_alert_changes_alert_id", "alert_changes", ["alert_id"])
    op.create_index("ix_alert_changes_event_id", "alert_changes", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_changes_event_id", table_name="alert_changes")
    op.drop_index("ix_alert_changes_alert_id", table_name="alert_changes")
    op.drop_table("alert_changes")
    op.drop_index("ix_decision_changes_event_id", table_name="decision_changes")
    op.drop_table("decision_changes")
