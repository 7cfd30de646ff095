"""Registrations: upload (CSV/JSON), totals and quality, and the personal rows (operator only)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import Event, Registration, RegistrationSummary
from server.db.session import get_session
from server.registrations import FileTooLarge, ImportError_, import_registrations, summary_dict

router = APIRouter(prefix="/api/v1/events/{event_id}/registrations", tags=["registrations"])


@router.post("", dependencies=[Depends(require_role(Role.operator))])
def upload(
    event_id: str,
    file: UploadFile,
    request: Request,
    session: Session = Depends(get_session),
    format: Literal["csv", "json"] | None = Query(None, description="Default: from the file name."),
) -> dict:
    """Replace the event's registrations with the file's (atomic; 422 with per-row errors if any is bad)."""
    fmt = format or ("json" if (file.filename or "").lower().endswith(".json") else "csv")
    limit = int(request.app.state.settings.max_upload_mb * 1_000_000)
    too_large = f"file larger than the upload limit of {limit:,} bytes (max_upload_mb); nothing imported"
    if file.size is not None and file.size > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large)
    try:
        report = import_registrations(
            session, event_id, file.file, fmt=fmt, source_name=file.filename or "upload", max_bytes=limit
        )
    except FileTooLarge:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large) from None
    except ImportError_ as exc:
        code = status.HTTP_404_NOT_FOUND if "no event" in str(exc) else status.HTTP_422_UNPROCESSABLE_CONTENT
        raise HTTPException(code, str(exc)) from None
    if not report.ok:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, report.as_dict())
    request.app.state.hub.reload()
    return report.as_dict()


@router.get("/summary", dependencies=[Depends(read_access)])
def summary(event_id: str, session: Session = Depends(get_session)) -> dict:
    """Totals by ticket type and the registration-quality figures (no personal data)."""
    if session.get(Event, event_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
    row = session.get(RegistrationSummary, event_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no registrations imported for {event_id!r}")
    return summary_dict(row)


@router.get("", dependencies=[Depends(require_role(Role.operator))])
def list_rows(
    event_id: str,
    session: Session = Depends(get_session),
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0),
    suspect: bool | None = None,
) -> list[dict]:
    """Personal rows (operator or admin)."""
    q = select(Registration).where(Registration.event_id == event_id)
    if suspect is True:
        q = q.where(Registration.duplicate | Registration.disposable)
    q = q.order_by(Registration.pk).offset(offset).limit(limit)
    return [
        {
            "ref": r.ref,
            "email": r.email,
            "phone": r.phone,
            "name": r.name,
            "ticket_type": r.ticket_type,
            "registered_at": r.registered_at.isoformat() if r.registered_at else None,
            "duplicate": r.duplicate,
            "disposable": r.disposable,
        }
        for r in session.scalars(q)
    ]
