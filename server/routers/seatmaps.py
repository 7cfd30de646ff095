"""Seat maps (issue 12): the venue's seating chart, and each camera's seats projected from point pairs.

* ``PUT /api/v1/venues/{venue}/chart`` (admin): the chart file as the body (CSV or JSON, docs/seatmaps.md);
  a bad chart is a 422 naming each bad seat, and nothing stored changes.
* ``GET /api/v1/venues/{venue}/chart``, ``.../chart/seats``, ``.../chart/state``: summary, geometry for
  drawing, and one state letter per seat (``o`` occupied, ``e`` empty, ``u`` unseen) from the live readings.
* ``PUT /api/v1/calibration/{venue}/{camera}/seatmap`` (operator): plan <-> image point pairs; the server
  fits the homography, projects the chart and sends the seats the camera sees as its layout (retained
  ``layout`` topic, contract v1). Refused pairs are a 422 and the previous layout stays in force.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import CameraSeatMap, SeatChart, User, Venue
from server.db.session import get_session
from server.routers._common import READ, WRITE, errors, not_found, unprocessable
from server.routers.calibration import EDGE_ERRORS, _check_camera, _relay, push_layout
from server.seatmap.chart import Chart, ChartError
from server.seatmap.project import PointPairs, ProjectionError, fit_homography, layout_sections, project_seats
from server.seatmap.store import (
    camera_map_dict,
    camera_maps,
    chart_geometry,
    chart_summary,
    import_chart,
    load_chart,
    save_camera_map,
    seat_states,
)
from turnout import contract

router = APIRouter(prefix="/api/v1", tags=["seat maps"])

Xy = tuple[float, float]


class ChartOut(BaseModel):
    venue: str
    seats: int
    sections: dict[str, int] = Field(description="Seats per section.")
    polygons: list[str] = Field(description="Sections with an outline on the plan.")
    unknown_sections: list[str] = Field(
        description="Chart sections that are not sections of the venue: drawn, but no camera's counts reach them."
    )
    source_name: str
    source_sha256: str
    imported_at: str | None
    imported_by: str | None


class ChartSeatsOut(BaseModel):
    """Column arrays in chart order: seat i is at (x[i], y[i]) in section sections[section[i]]."""

    sections: list[str]
    polygons: dict[str, list[Xy]]
    bounds: tuple[float, float, float, float] = Field(description="min x, min y, max x, max y on the plan")
    section: list[int]
    row: list[str]
    seat: list[str]
    x: list[float]
    y: list[float]


class ChartStateOut(BaseModel):
    states: str = Field(description="One letter per chart seat in chart order: o occupied, e empty, u unseen.")
    occupied: int
    empty: int
    unseen: int
    cameras: list[str] = Field(description="Cameras whose seats are live now.")


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    plan: Xy = Field(description="Point on the chart's plan (chart units, y down).")
    image: Xy = Field(description="The same point in the camera image (pixels).")


class SeatMapIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    frame: tuple[Annotated[int, Field(ge=16, le=16384)], Annotated[int, Field(ge=16, le=16384)]] = Field(
        description="Width and height of the camera image the points were clicked on (pixels)."
    )
    pairs: list[PairIn] = Field(default_factory=list, max_length=200, description="At least 4 pairs (plan <-> image).")
    sections: dict[contract.Id, list[PairIn]] = Field(
        default_factory=dict,
        max_length=1000,
        description="Piecewise mapping: a section with its own >= 4 pairs uses its own homography.",
    )
    min_seat_px: float | None = Field(None, gt=0, le=1000, description="Default: the server's seat_min_px.")
    hide: list[list[Xy]] = Field(
        default_factory=list, max_length=100, description="Image areas where seats are hidden (pillars, railings)."
    )
    dry_run: bool = Field(False, description="Only project and answer with the layout; send nothing.")


class SeatMapOut(BaseModel):
    ok: bool
    errors: list[str]
    request_id: str | None
    seen: int
    unseen: int
    unseen_by_reason: dict[str, int]
    sections: dict[str, int] = Field(description="Seats seen per section.")
    warnings: list[str]
    layout: dict[str, Any] | None = Field(None, description="The layout sent (or, with dry_run, that would be).")


# ------------------------------------------------------------------------------------------- chart
def _limit(request: Request) -> int:
    return int(request.app.state.settings.max_upload_mb * 1_000_000)


@router.put(
    "/venues/{venue_id}/chart",
    response_model=ChartOut,
    responses=errors(*WRITE, 411, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
        }
    },
)
async def put_chart(
    venue_id: str,
    request: Request,
    session: Session = Depends(get_session),
    user: User = Depends(require_role(Role.admin)),
    format: Literal["csv", "json"] | None = Query(None, description="Default: from Content-Type, else sniffed."),
    y_up: bool = Query(False, description="The chart's y axis grows upwards (flipped on import)."),
    name: str = Query("upload", max_length=300, description="Source file name, kept with the chart."),
) -> dict[str, Any]:
    """Replace the venue's seating chart with the body (atomic; 422 naming every bad seat, nothing changed)."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "send the chart with a Content-Length header")
    if int(raw) > _limit(request):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"chart larger than {_limit(request):,} bytes")
    if await run_in_threadpool(session.get, Venue, venue_id) is None:
        raise not_found(f"no venue {venue_id!r}")
    data = await request.body()
    ctype = request.headers.get("content-type", "")
    fmt = format or ("json" if "json" in ctype else "csv" if "csv" in ctype else None)
    try:
        summary = await run_in_threadpool(
            import_chart, session, venue_id, data, fmt=fmt, source_name=name, y_up=y_up, by=user.name
        )
    except ChartError as exc:
        session.rollback()
        detail: list[dict[str, Any]] = [
            {"loc": ["body", *msg.split(":", 1)[:1]], "msg": msg, "type": "value_error"} for msg in exc.errors
        ]
        if exc.total > len(exc.errors):
            more = exc.total - len(exc.errors)
            detail.append({"loc": ["body"], "msg": f"... and {more} more", "type": "value_error"})
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from None
    request.app.state.seat_charts = {}
    return summary


@router.get("/venues/{venue_id}/chart", dependencies=[Depends(read_access)], response_model=ChartOut, responses=errors(*READ))
def get_chart(venue_id: str, session: Session = Depends(get_session)) -> dict[str, Any]:
    """The chart's summary: seats per section, source file, when and by whom imported."""
    summary = chart_summary(session, venue_id)
    if summary is None:
        raise not_found(f"no seat chart for venue {venue_id!r}")
    return summary


def cached_chart(request: Request, session: Session, venue_id: str) -> Chart:
    """The venue's chart, read once per import (the dashboard asks for its state every few seconds)."""
    head = session.get(SeatChart, venue_id)
    if head is None:
        raise not_found(f"no seat chart for venue {venue_id!r}")
    cache: dict[str, tuple[str, Chart]] = getattr(request.app.state, "seat_charts", None) or {}
    request.app.state.seat_charts = cache
    stamp = f"{head.source_sha256}@{head.imported_at.isoformat()}"
    hit = cache.get(venue_id)
    if hit is None or hit[0] != stamp:
        chart = load_chart(session, venue_id)
        assert chart is not None
        cache[venue_id] = hit = (stamp, chart)
    return hit[1]


@router.get(
    "/venues/{venue_id}/chart/seats",
    dependencies=[Depends(read_access)],
    response_model=ChartSeatsOut,
    responses=errors(*READ),
)
def get_chart_seats(venue_id: str, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Every seat's section, row, seat label and plan position (for drawing the venue)."""
    return chart_geometry(cached_chart(request, session, venue_id))


@router.get(
    "/venues/{venue_id}/chart/state",
    dependencies=[Depends(read_access)],
    response_model=ChartStateOut,
    responses=errors(*READ),
)
def get_chart_state(venue_id: str, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Per seat: occupied, empty (a live camera sees it free) or unseen (no live camera sees it)."""
    chart = cached_chart(request, session, venue_id)
    hub = request.app.state.hub
    stale_s = request.app.state.settings.stale_after_s
    now = hub.clock.now()
    maps = {m.camera_id: m.seen for m in camera_maps(session, venue_id)}
    live: list[str] = []
    taken: list[str] = []
    with hub._lock:
        venue = hub.venues.get(venue_id)
        if venue is not None:
            for cam_id in maps:
                cam = venue.cameras.get(cam_id)
                if cam is not None and cam.last_seen is not None and (now - cam.last_seen).total_seconds() <= stale_s:
                    live.append(cam_id)
            for (sid, cam_id), reading in venue.readings.items():
                if cam_id in live and reading.taken:
                    taken += [f"{sid}/{t.replace('-', '/', 1)}" for t in reading.taken]
    seen = [label for cam_id in live for label in maps[cam_id]]
    states = seat_states(chart, seen, taken)
    return {
        "states": states,
        "occupied": states.count("o"),
        "empty": states.count("e"),
        "unseen": states.count("u"),
        "cameras": sorted(live),
    }


# --------------------------------------------------------------------------------------- per camera
def _pairs(items: list[PairIn]) -> PointPairs:
    return PointPairs.of([(p.plan, p.image) for p in items])


@router.get(
    "/calibration/{venue}/{camera}/seatmap",
    dependencies=[Depends(require_role(Role.operator))],
    responses=errors(401, 403, 404),
)
def get_seatmap(venue: str, camera: str, session: Session = Depends(get_session)) -> dict[str, Any]:
    """The camera's stored mapping: its point pairs, homography and how many chart seats it sees."""
    row = session.get(CameraSeatMap, (venue, camera))
    if row is None:
        raise not_found(f"camera {camera} of {venue!r} has no seat map")
    return camera_map_dict(row)


@router.put("/calibration/{venue}/{camera}/seatmap", response_model=SeatMapOut, responses=EDGE_ERRORS | errors(404))
async def put_seatmap(
    venue: str,
    camera: str,
    body: SeatMapIn,
    request: Request,
    session: Session = Depends(get_session),
    user: User = Depends(require_role(Role.operator)),
) -> dict[str, Any]:
    """Fit the plan -> image mapping, project the chart and send the seats the camera sees as its layout.

    422: fewer than 4 pairs, degenerate or mirrored/folded mapping, clicked points outside the frame, no
    seat in the frame. The edge's verdict is returned as ``ok``/``errors``; the mapping is stored only
    when the edge accepted the layout (a refused one leaves the previous layout in force).
    """
    _check_camera(venue, camera)
    hub = request.app.state.hub
    with hub._lock:
        v = hub.venues.get(venue)
        if v is None or camera not in v.cameras:
            raise not_found(f"camera {camera} is not a camera of venue {venue!r} (list it in the venue first)")
    chart = await run_in_threadpool(cached_chart, request, session, venue)
    w, h = body.frame
    min_px = body.min_seat_px or request.app.state.settings.seat_min_px
    pairs: dict[str | None, PointPairs] = {}
    if body.pairs or not body.sections:
        pairs[None] = _pairs(body.pairs)
    for sid, items in body.sections.items():
        if sid not in set(chart.sections):
            raise unprocessable(f"sections.{sid}: the chart has no section {sid!r}", ("body", "sections", sid))
        pairs[sid] = _pairs(items)
    try:
        homographies = {
            key: fit_homography(p, w, h, what="pairs" if key is None else f"sections.{key}")
            for key, p in pairs.items()
        }
        proj = await run_in_threadpool(project_seats, chart, homographies, w, h, min_px, body.hide)
    except ProjectionError as exc:
        raise unprocessable(str(exc), ("body", "pairs")) from None
    if not proj.polygons:
        raise unprocessable(
            f"no chart seat falls inside the {w}x{h} frame at {min_px:g} px or more "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(proj.unseen.items()))}): check the point pairs",
            ("body", "pairs"),
        )
    sections = layout_sections(chart, proj)
    if len(sections) > 1000:
        raise unprocessable(f"the camera sees {len(sections)} sections; a layout holds at most 1000", ("body",))
    msg = contract.Layout(request_id=uuid.uuid4().hex, coordinates="pixels", sections=sections)
    out: dict[str, Any] = {
        **proj.summary(),
        "sections": {s["id"]: s["seats"] for s in sections},
        "warnings": _warnings(request, venue, camera, sections),
        "layout": msg.model_dump(mode="json", exclude_none=True),
    }
    if body.dry_run:
        return {**out, "ok": True, "errors": [], "request_id": None}
    result = await push_layout(_relay(request), venue, camera, msg)
    if result.ok:
        await run_in_threadpool(_store, session, venue, camera, chart, pairs, proj, min_px, user.name)
    return {**out, "ok": result.ok, "errors": result.errors, "request_id": msg.request_id}


def _store(session: Session, venue: str, camera: str, chart: Chart, pairs: Any, proj: Any, min_px: float, by: str) -> None:
    save_camera_map(session, venue, camera, chart, pairs, proj, min_px, by)
    session.commit()


def _warnings(request: Request, venue: str, camera: str, sections: list[dict[str, Any]]) -> list[str]:
    """Sections the server will not count from this camera (not configured for it in the venue)."""
    hub = request.app.state.hub
    out = []
    with hub._lock:
        v = hub.venues.get(venue)
        for s in sections:
            cfg = v.sections.get(s["id"]) if v else None
            if cfg is None:
                out.append(f"section {s['id']} is not a section of venue {venue}: its counts will be ignored")
            elif camera not in cfg.cameras:
                out.append(f"section {s['id']} does not list camera {camera}: its counts will be ignored")
    return out

