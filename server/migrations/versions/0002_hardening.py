"""hardening: user disabling, registration import generations, longer alert ids

Revision ID: 0002_hardening
Revises: 0001
Create Date: 2026-11-30

- ``users.disabled``: `turnout users disable` (a disabled user cannot sign in; its tokens stop working).
- ``registrations.import_id`` and ``registration_summaries.import_id``: an import writes its rows in chunks
  under a new ``import_id`` (a staging generation, invisible to readers), then one short transaction points
  the summary at it; the previous generation is deleted afterwards in chunks. The database write lock is
  never held for the whole import.
- tokens without an expiry (created before this revision) expire 30 days after the upgrade.
- ``alerts.id`` widened to 255: derived ids such as ``{venue}:camera_stale:{camera}`` (64 + 14 + 64) fit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from server.db.models import UTCDateTime

revision = "0002_hardening"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN, not batch mode: on SQLite a batch rebuild of `users` drops the table, and with
    # foreign keys on, that cascades into `tokens`
    op.add_column("users", sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("registrations", sa.Column("import_id", sa.String(length=32), nullable=True))
    op.create_index("ix_registrations_event_import", "registrations", ["event_id", "import_id"], unique=False)
    op.add_column("registration_summaries", sa.Column("import_id", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column("alerts", "id", existing_type=sa.String(length=128), type_=sa.String(length=255))
    tokens = sa.table("tokens", sa.column("expires_at", UTCDateTime(timezone=True)))
    op.execute(
        tokens.update()
        .where(tokens.c.expires_at.is_(None))
        .values(expires_at=datetime.now(UTC) + timedelta(days=30))
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("alerts", "id", existing_type=sa.String(length=255), type_=sa.String(length=128))
    with op.batch_alter_table("registration_summaries", schema=None) as batch_op:
        batch_op.drop_column("import_id")
    op.drop_index("ix_registrations_event_import", table_name="registrations")
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_column("import_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled")
