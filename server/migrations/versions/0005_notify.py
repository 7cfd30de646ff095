"""notifications to organizers: Apprise targets per event, a delivery log per alert

Revision ID: 0005_notify
Revises: 0004_streams
Create Date: 2026-11-30

- ``events.notify``: ``[{url, label, kinds}]``, the event's notification targets (Apprise URLs);
- ``alert_deliveries``: each alert change sent to each target, with attempts, status and last error.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_notify"
down_revision = "0004_streams"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("alert_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("alert_state", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("target_url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_index("ix_alert_deliveries_event_id", "alert_deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_event_id", table_name="alert_deliveries")
    op.drop_index("ix_alert_deliveries_alert_id", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("notify")
