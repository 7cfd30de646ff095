"""forecast as a distribution: section kinds, queue/coverage/probability in the series, reversals

Revision ID: 0003_forecast
Revises: 0002_hardening
Create Date: 2026-11-30

- ``sections.kind``: ``seats`` | ``standing`` | ``queue`` (queues outside are not attendance; the forecast
  reads them as people about to come in).
- ``event_samples.queue``, ``.coverage``, ``.p_reach_target``: what the forecast rested on, per sample
  (``forecast``/``forecast_low``/``forecast_high`` now hold p50/p05/p95).
- ``decisions.reversed_from``: the opposite decision a reversal replaced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_forecast"
down_revision = "0002_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="seats"))
    with op.batch_alter_table("event_samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("coverage", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("p_reach_target", sa.Float(), nullable=True))
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reversed_from", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("reversed_from")
    with op.batch_alter_table("event_samples", schema=None) as batch_op:
        batch_op.drop_column("p_reach_target")
        batch_op.drop_column("coverage")
        batch_op.drop_column("queue")
    with op.batch_alter_table("sections", schema=None) as batch_op:
        batch_op.drop_column("kind")
