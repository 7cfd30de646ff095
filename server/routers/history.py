"""Time series of an event (attendance, forecast band, decision) and of its sections; JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth import read_access
from server.db.models import Event, EventSample, SectionSample
from server.db.session import get_session
from server.routers._common import READ, errors, not_found, unprocessable
from server.venues import EARLIEST, LATEST

router = APIRouter(prefix="/api/v1/events", tags=["history"])
# new columns go at the end, so CSV readers of the first columns keep working
FIELDS = [
    "ts",
    "attendance",
    "people",
    "forecast",
    "forecast_low",
    "forecast_high",
    "decision",
    "queue",
    "coverage",
    "p_reach_target",
]


class EventPoint(BaseModel):
    ts: str
    attendance: int
    people: int
    queue: int = Field(0, description="People counted in `queue` sections outside (not in the attendance).")
    coverage: float | None = Field(None, description="Share of the seats with a live camera (0..1).")
    forecast: float | None = Field(description="Median forecast of the final attendance (p50).")
    forecast_low: float | None = Field(description="5th percentile of the forecast (p05).")
    forecast_high: float | None = Field(description="95th percentile of the forecast (p95).")
    p_reach_target: float | None = Field(
        None, description="Chance (0..1) that the final attendance reaches the target."
    )
    decision: str | None


class SectionPoint(BaseModel):
    ts: str
    section: str
    occupied: int
    people: int


@router.get(
    "/{event_id}/history",
    dependencies=[Depends(read_access)],
    response_model=list[EventPoint] | list[SectionPoint],
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON or CSV (format=csv)"},
        **errors(*READ),
    },
)
def history(
    event_id: str,
    session: Session = Depends(get_session),
    format: Literal["json", "csv"] = "json",
    since: datetime | None = None,
    sections: bool = Query(False, description="Per-section series instead of the event's."),
):
    if since is not None and since.tzinfo is None:  # a time without offset is UTC, as everywhere in the API
        since = since.replace(tzinfo=UTC)
    if since is not None:
        try:
            in_window = EARLIEST <= since < LATEST
        except OverflowError:
            in_window = False
        if not in_window:
            raise unprocessable(f"must lie in the years {EARLIEST.year}-{LATEST.year - 1}", ("query", "since"))
    event = session.get(Event, event_id)
    if event is None:
        raise not_found(f"no event {event_id!r}")
    if sections:
        q = select(SectionSample).where(SectionSample.venue_id == event.venue_id)
        if since:
            q = q.where(SectionSample.ts >= since)
        rows = [
            {"ts": r.ts.isoformat(), "section": r.section_id, "occupied": r.occupied, "people": r.people}
            for r in session.scalars(q.order_by(SectionSample.ts, SectionSample.section_id))
        ]
        fields = ["ts", "section", "occupied", "people"]
    else:
        q = select(EventSample).where(EventSample.event_id == event_id)
        if since:
            q = q.where(EventSample.ts >= since)
        rows = [
            {k: (getattr(r, k).isoformat() if k == "ts" else getattr(r, k)) for k in FIELDS}
            for r in session.scalars(q.order_by(EventSample.ts))
        ]
        fields = FIELDS
    if format == "json":
        return rows
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{event_id}-history.csv"'},
    )
