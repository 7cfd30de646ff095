"""sequence streams: a device reset or a clock jump backwards starts a new stream (server.sequence)

Revision ID: 0004_streams
Revises: 0003_forecast
Create Date: 2026-11-30

- ``cameras.last_stream``: the stream of the last applied occupancy message;
- ``cameras.prev_stream``: the stream it retired ("" an old edge without stream ids, NULL none yet).
  A camera stuck behind a huge ``last_seq`` recovers on the first message that carries a stream id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_streams"
down_revision = "0003_forecast"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_stream", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("prev_stream", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.drop_column("prev_stream")
        batch_op.drop_column("last_stream")
