"""Registrations: upload (CSV/JSON), totals and quality, and the personal rows (operator only).

The upload is checked before its body is read: the token (401/403), the event (404) and the declared
``Content-Length`` (411 without one, 413 above ``max_upload_mb``); only then is the multipart body parsed
(spooled to a temporary file) and streamed into the import.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from server.auth import Role, read_access, require_role
from server.db.models import Event, Registration, RegistrationSummary
from server.db.session import get_session
from server.registrations import FileTooLarge, ImportError_, import_registrations, summary_dict, visible_import_id
from server.routers._common import READ, WRITE, errors, not_found, unprocessable

router = APIRouter(prefix="/api/v1/events/{event_id}/registrations", tags=["registrations"])
MULTIPART_SLACK = 64 * 1024  # multipart boundaries and part headers around the file


class SummaryOut(BaseModel):
    event: str
    total: int
    by_ticket_type: dict[str, int]
    duplicates: int
    disposable: int
    burst: int
    suspect: int
    suspect_share: float
    plausible: int
    source_sha256: str
    source_name: str
    imported_at: str


class ReportOut(BaseModel):
    ok: bool
    rows: int
    imported: int
    error_count: int
    errors: list[dict[str, Any]]
    summary: SummaryOut | None


class RegistrationOut(BaseModel):
    ref: str | None
    email: str | None
    phone: str | None
    name: str | None
    ticket_type: str
    registered_at: str | None
    duplicate: bool
    disposable: bool


def _limit(request: Request) -> int:
    return int(request.app.state.settings.max_upload_mb * 1_000_000)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"file larger than the upload limit of {limit:,} bytes (max_upload_mb); nothing imported",
    )


def declared_length(request: Request) -> int:
    """Dependency: the body's declared size, refused (411/413) before anything of it is read."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "send the file with a Content-Length header")
    length = int(raw)
    limit = _limit(request)
    if length > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    return length


_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post(
    "",
    dependencies=[Depends(require_role(Role.operator)), Depends(declared_length)],
    response_model=ReportOut,
    responses={400: {"description": "Malformed multipart body"}, **errors(*WRITE, 411, 413)},
    openapi_extra=_MULTIPART,
)
async def upload(
    event_id: str,
    request: Request,
    session: Session = Depends(get_session),
    format: Literal["csv", "json"] | None = Query(None, description="Default: from the file name."),
) -> dict:
    """Replace the event's registrations with the file's (multipart field ``file``).

    Atomic: 422 with one entry per bad row (``loc`` = body, file, row number, column) and nothing imported.
    """
    if await run_in_threadpool(session.get, Event, event_id) is None:
        raise not_found(f"no event {event_id!r}")
    limit = _limit(request)
    form = await request.form(max_files=1, max_fields=4)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise unprocessable("Field required", ("body", "file"), "missing")
        fmt = format or ("json" if (file.filename or "").lower().endswith(".json") else "csv")
        if file.size is not None and file.size > limit:
            raise _too_large(limit)
        try:
            report = await run_in_threadpool(
                import_registrations,
                session,
                event_id,
                file.file,
                fmt=fmt,
                source_name=file.filename or "upload",
                max_bytes=limit,
            )
        except FileTooLarge:
            raise _too_large(limit) from None
        except ImportError_ as exc:
            if "no event" in str(exc):
                raise not_found(str(exc)) from None
            raise unprocessable(str(exc), ("body", "file")) from None
    finally:
        await form.close()
    if not report.ok:
        detail: list[dict[str, Any]] = [
            {"loc": ["body", "file", e.row, e.field], "msg": e.message, "type": "value_error", "row": e.row}
            for e in report.errors
        ]
        if report.error_count > len(detail):
            more = report.error_count - len(detail)
            detail.append({"loc": ["body", "file"], "msg": f"... and {more} more bad rows", "type": "value_error"})
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
    request.app.state.hub.reload()
    return report.as_dict()


@router.get("/summary", dependencies=[Depends(read_access)], response_model=SummaryOut, responses=errors(*READ))
def summary(event_id: str, session: Session = Depends(get_session)) -> dict:
    """Totals by ticket type and the registration-quality figures (no personal data)."""
    if session.get(Event, event_id) is None:
        raise not_found(f"no event {event_id!r}")
    row = session.get(RegistrationSummary, event_id)
    if row is None:
        raise not_found(f"no registrations imported for {event_id!r}")
    return summary_dict(row)


@router.get(
    "",
    dependencies=[Depends(require_role(Role.operator))],
    response_model=list[RegistrationOut],
    responses=errors(401, 403),
)
def list_rows(
    event_id: str,
    session: Session = Depends(get_session),
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=2**31 - 1),
    suspect: bool | None = None,
) -> list[dict]:
    """Personal rows (operator or admin), of the event's current import."""
    has_rows, import_id = visible_import_id(session, event_id)
    if not has_rows:
        return []
    gen = Registration.import_id.is_(None) if import_id is None else Registration.import_id == import_id
    q = select(Registration).where(Registration.event_id == event_id, gen)
    if suspect is True:
        q = q.where(or_(Registration.duplicate, Registration.disposable))
    elif suspect is False:
        q = q.where(~Registration.duplicate, ~Registration.disposable)
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
