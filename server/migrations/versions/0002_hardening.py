"""hardening: user disabling, registration import generations, longer alert ids

Revision ID: 0002_hardening
Revises: 0001
Create Date: 2026-11-30

- ``users.disabled``: `turnout users disable` (a disabled user cannot sign in; its tokens stop working).
- ``registrations.import_id`` and ``registration_summaries.import_id``: an import writes its rows in chunks
  under a new ``import_id`` (a staging generation, invisible to readers), then one short transaction points
  the summary at it; the previous generation is deleted afterwards in chunks. The database write lock is
  never held for the whole import.
- ``alerts.id`` widened to 255: derived ids such as ``{venue}:camera_stale:{camera}`` (64 + 14 + 64) fit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_hardening"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_registrations_event_import", ["event_id", "import_id"], unique=False)
    with op.batch_alter_table("registration_summaries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("id", existing_type=sa.String(length=128), type_=sa.String(length=255))


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("id", existing_type=sa.String(length=255), type_=sa.String(length=128))
    with op.batch_alter_table("registration_summaries", schema=None) as batch_op:
        batch_op.drop_column("import_id")
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_index("ix_registrations_event_import")
        batch_op.drop_column("import_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled")
