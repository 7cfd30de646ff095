"""Alerts: list and acknowledge."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.alerts import row_to_dict
from server.auth import Role, read_access, require_role
from server.db.models import AlertRow, User
from server.db.session import get_session

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", dependencies=[Depends(read_access)])
def list_alerts(
    session: Session = Depends(get_session),
    venue: str | None = None,
    event: str | None = None,
    active: bool | None = Query(None, description="Only active (true) or cleared (false) alerts."),
) -> list[dict]:
    q = select(AlertRow).order_by(AlertRow.updated_at.desc())
    if venue:
        q = q.where(AlertRow.venue_id == venue)
    if event:
        q = q.where(AlertRow.event_id == event)
    if active is not None:
        q = q.where(AlertRow.active == active)
    return [row_to_dict(r) for r in session.scalars(q)]


@router.post("/{alert_id}/ack")
def acknowledge(
    alert_id: str,
    request: Request,
    session: Session = Depends(get_session),
    user: User = Depends(require_role(Role.operator)),
) -> dict:
    hub = request.app.state.hub
    result = hub.alerts.acknowledge(session, alert_id, user.name, hub.clock.now())
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id!r}")
    hub._notify()
    return result
