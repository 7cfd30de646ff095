"""seat charts: a venue's seats on the plan, and the chart seats each camera sees (issue 12)

Revision ID: 0009_seat_charts
Revises: 0008_evaluator_lease
Create Date: 2026-12-01

- ``seat_charts``: one chart per venue (source, seat count, section outlines on the plan);
- ``chart_seats``: its seats (section, row, seat, x, y), unique per venue;
- ``camera_seatmaps``: per camera, the point pairs, the plan -> image homography and the seats it sees.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_seat_charts"
down_revision = "0008_evaluator_lease"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "seat_charts",
        sa.Column("venue_id", sa.String(length=64), sa.ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("polygons", sa.JSON(), nullable=False),
        sa.Column("source_name", sa.String(length=300), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_by", sa.String(length=64), nullable=True),
    )
    op.create_table(
        "chart_seats",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column(
            "venue_id",
            sa.String(length=64),
            sa.ForeignKey("seat_charts.venue_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("section", sa.String(length=64), nullable=False),
        sa.Column("row", sa.String(length=16), nullable=False),
        sa.Column("seat", sa.String(length=16), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
    )
    op.create_index("ux_chart_seats_key", "chart_seats", ["venue_id", "section", "row", "seat"], unique=True)
    op.create_table(
        "camera_seatmaps",
        sa.Column("venue_id", sa.String(length=64), sa.ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("camera_id", sa.String(length=64), primary_key=True),
        sa.Column("pairs", sa.JSON(), nullable=False),
        sa.Column("homography", sa.JSON(), nullable=False),
        sa.Column("frame_w", sa.Integer(), nullable=False),
        sa.Column("frame_h", sa.Integer(), nullable=False),
        sa.Column("min_seat_px", sa.Float(), nullable=False),
        sa.Column("seen", sa.JSON(), nullable=False),
        sa.Column("unseen", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("camera_seatmaps")
    op.drop_index("ux_chart_seats_key", table_name="chart_seats")
    op.drop_table("chart_seats")
    op.drop_table("seat_charts")
