"""Seat charts and camera seat maps in the database (SQLite and PostgreSQL).

A chart replaces the venue's previous one in one transaction (bulk insert: 10,000 seats well under a
second); a bad chart is refused before anything is written, so nothing stored changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from server.db.models import CameraSeatMap, ChartSeatRow, SeatChart, Section, Venue, utcnow
from server.seatmap.chart import Chart, ChartError, ChartSeat, parse_chart
from server.seatmap.project import PointPairs, Projection

INSERT_BATCH = 5000


def import_chart(
    session: Session,
    venue_id: str,
    data: bytes,
    *,
    fmt: str | None = None,
    source_name: str = "upload",
    y_up: bool = False,
    by: str | None = None,
) -> dict[str, Any]:
    """Parse, check and store the chart of ``venue_id`` (replacing its previous one); its summary.

    Raises `ChartError` (nothing written) for an unknown venue or a bad chart.
    """
    if session.get(Venue, venue_id) is None:
        raise ChartError([f"no venue {venue_id!r}: load the venue first (turnout server load)"])
    chart = parse_chart(data, fmt, y_up=y_up)
    save_chart(session, venue_id, chart, source_name, hashlib.sha256(data).hexdigest(), by)
    session.commit()
    return chart_summary(session, venue_id) or {}


def save_chart(
    session: Session, venue_id: str, chart: Chart, source_name: str, sha256: str, by: str | None = None
) -> None:
    """Replace the venue's chart rows (the caller commits)."""
    session.execute(delete(ChartSeatRow).where(ChartSeatRow.venue_id == venue_id))
    session.execute(delete(SeatChart).where(SeatChart.venue_id == venue_id))
    session.add(
        SeatChart(
            venue_id=venue_id,
            seats=len(chart.seats),
            polygons={k: [list(p) for p in v] for k, v in chart.polygons.items()},
            source_name=source_name[:300],
            source_sha256=sha256,
            imported_at=utcnow(),
            imported_by=by,
        )
    )
    session.flush()
    rows = [
        {"venue_id": venue_id, "section": s.section, "row": s.row, "seat": s.seat, "x": s.x, "y": s.y}
        for s in chart.seats
    ]
    for i in range(0, len(rows), INSERT_BATCH):
        session.execute(insert(ChartSeatRow), rows[i : i + INSERT_BATCH])


def load_chart(session: Session, venue_id: str) -> Chart | None:
    """The venue's chart in import order, or None."""
    head = session.get(SeatChart, venue_id)
    if head is None:
        return None
    q = (
        select(ChartSeatRow.section, ChartSeatRow.row, ChartSeatRow.seat, ChartSeatRow.x, ChartSeatRow.y)
        .where(ChartSeatRow.venue_id == venue_id)
        .order_by(ChartSeatRow.pk)
    )
    seats = [ChartSeat(*r) for r in session.execute(q)]
    polygons = {k: [(float(a), float(b)) for a, b in v] for k, v in (head.polygons or {}).items()}
    return Chart(seats, polygons)


def chart_summary(session: Session, venue_id: str) -> dict[str, Any] | None:
    head = session.get(SeatChart, venue_id)
    if head is None:
        return None
    rows = session.execute(
        select(ChartSeatRow.section).where(ChartSeatRow.venue_id == venue_id)
    ).scalars()
    per: dict[str, int] = {}
    for sid in rows:
        per[sid] = per.get(sid, 0) + 1
    known = set(session.execute(select(Section.id).where(Section.venue_id == venue_id)).scalars())
    return {
        "venue": venue_id,
        "seats": head.seats,
        "sections": dict(sorted(per.items())),
        "polygons": sorted(head.polygons or {}),
        "unknown_sections": sorted(set(per) - known),
        "source_name": head.source_name,
        "source_sha256": head.source_sha256,
        "imported_at": _iso(head.imported_at),
        "imported_by": head.imported_by,
    }


def chart_geometry(chart: Chart) -> dict[str, Any]:
    """The chart compactly for drawing: column arrays in chart order (10,000 seats: a few hundred KB)."""
    sections = chart.sections
    index = {s: i for i, s in enumerate(sections)}
    xy = chart.xy()
    lo, hi = (xy.min(axis=0), xy.max(axis=0)) if len(xy) else (np.zeros(2), np.ones(2))
    return {
        "sections": sections,
        "polygons": {k: [list(p) for p in v] for k, v in chart.polygons.items()},
        "bounds": [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])],
        "section": [index[s.section] for s in chart.seats],
        "row": [s.row for s in chart.seats],
        "seat": [s.seat for s in chart.seats],
        "x": [round(s.x, 3) for s in chart.seats],
        "y": [round(s.y, 3) for s in chart.seats],
    }


def save_camera_map(
    session: Session,
    venue_id: str,
    camera_id: str,
    chart: Chart,
    pairs: dict[str | None, PointPairs],
    proj: Projection,
    min_seat_px: float,
    by: str | None,
) -> CameraSeatMap:
    """Store (replace) what one camera sees; the caller commits once the edge accepted the layout."""
    row = session.get(CameraSeatMap, (venue_id, camera_id)) or CameraSeatMap(venue_id=venue_id, camera_id=camera_id)
    row.pairs = {
        (k or ""): {"plan": p.plan.tolist(), "image": p.image.tolist()} for k, p in pairs.items()
    }
    row.homography = {(k or ""): H.tolist() for k, H in proj.homographies.items()}
    row.frame_w, row.frame_h = proj.frame_w, proj.frame_h
    row.min_seat_px = min_seat_px
    row.seen = [chart.seats[i].label for i in proj.seen]
    row.unseen = sum(proj.unseen.values())
    row.updated_at = utcnow()
    row.updated_by = by
    session.add(row)
    return row


def camera_maps(session: Session, venue_id: str) -> list[CameraSeatMap]:
    return list(
        session.scalars(select(CameraSeatMap).where(CameraSeatMap.venue_id == venue_id).order_by(CameraSeatMap.camera_id))
    )


def camera_map_dict(row: CameraSeatMap) -> dict[str, Any]:
    return {
        "camera": row.camera_id,
        "frame": [row.frame_w, row.frame_h],
        "min_seat_px": row.min_seat_px,
        "seen": len(row.seen),
        "unseen": row.unseen,
        "pairs": row.pairs,
        "homography": row.homography,
        "updated_at": _iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def seat_states(chart: Chart, seen: Iterable[str], taken: Iterable[str]) -> str:
    """One letter per chart seat, in chart order: ``o`` occupied, ``e`` empty (seen, free), ``u`` unseen."""
    seen_set, taken_set = set(seen), set(taken)
    out = []
    for s in chart.seats:
        label = s.label
        out.append("o" if label in taken_set else "e" if label in seen_set else "u")
    return "".join(out)


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
