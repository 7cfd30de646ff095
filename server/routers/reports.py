"""The post-event report of an event as HTML, PDF or CSV (signed-in users; the dashboard's download button)."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy.orm import Session

from server.auth import Role, require_role
from server.db.session import get_session
from server.report import MEDIA_TYPES, render
from server.report.gather import UnknownEvent, gather
from server.report.pdf import PdfUnavailable
from server.routers._common import READ, errors, not_found

router = APIRouter(prefix="/api/v1/events", tags=["reports"])


@router.get(
    "/{event_id}/report",
    dependencies=[Depends(require_role(Role.viewer))],
    response_class=Response,
    responses={
        **errors(*READ, 403, 503),
        200: {"content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}, "description": "The report"},
    },
)
def event_report(
    event_id: str,
    request: Request,
    format: Literal["html", "pdf", "csv"] = Query("html", description="html (self-contained), pdf or csv"),
    download: bool = Query(True, description="Content-Disposition: attachment (false: inline)"),
    session: Session = Depends(get_session),
) -> Response:
    """The event's report: attendance and forecast band, decision timeline, forecast against the final,
    show-up, fill per section, camera uptime, alerts with who acknowledged them, organizer notifications.
    Provisional (it says so) until the event has started."""
    try:
        data = gather(session, event_id, request.app.state.hub.clock.now())
    except UnknownEvent:
        raise not_found(f"no event {event_id!r}") from None
    try:
        body = render(data, format)
    except PdfUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    disposition = "attachment" if download else "inline"
    return Response(
        body,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'{disposition}; filename="report-{re.sub(r"[^A-Za-z0-9._-]", "_", event_id)}.{format}"',
            "X-Report-Status": "final" if data.final else "provisional",
            "Cache-Control": "no-store",
        },
    )
