"""evaluator_lease: the database lease that chooses the one server process that evaluates and publishes

Revision ID: 0008_evaluator_lease
Revises: 0007_change_logs
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_evaluator_lease"
down_revision = "0007_change_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluator_lease",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluator_lease")
