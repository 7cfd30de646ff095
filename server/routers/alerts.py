"""Alerts: list and acknowledge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.alerts import row_to_dict
from server.auth import Role, read_access, require_role
from server.db.models import AlertRow, User
from server.db.session import get_session
from server.routers._common import WRITE, errors, not_found

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class AlertOut(BaseModel):
    id: str
    venue: str
    event: str | None
    kind: str
    subject: str | None
    state: str
    active: bool
    severity: str
    message: str
    figures: dict[str, Any]
    created_at: str
    updated_at: str
    acknowledged: bool
    acknowledged_at: str | None
    acknowledged_by: str | None


@router.get("", dependencies=[Depends(read_access)], response_model=list[AlertOut], responses=errors(401))
def list_alerts(
    session: Session = Depends(get_session),
    venue: str | None = Query(None, max_length=64),
    event: str | None = Query(None, max_length=64),
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


@router.post("/{alert_id}/ack", response_model=AlertOut, responses=errors(*WRITE))
def acknowledge(
    request: Request,
    alert_id: str = Path(max_length=255),
    session: Session = Depends(get_session),
    user: User = Depends(require_role(Role.operator)),
) -> dict:
    hub = request.app.state.hub
    result = hub.alerts.acknowledge(session, alert_id, user.name, hub.clock.now())
    if result is None:
        raise not_found(f"no alert {alert_id!r}")
    hub._notify()
    return result
