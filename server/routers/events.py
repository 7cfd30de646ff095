"""Events: times, capacity, overflow event; operator override of the overflow decision."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import Event, User
from server.db.session import get_session
from server.decision import DecisionState
from server.venues import EventIn, VenueFileError, event_dict, save_event

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.get("", dependencies=[Depends(read_access)])
def list_events(session: Session = Depends(get_session)) -> list[dict]:
    return [event_dict(e) for e in session.scalars(select(Event).order_by(Event.start))]


@router.get("/{event_id}", dependencies=[Depends(read_access)])
def get_event(event_id: str, session: Session = Depends(get_session)) -> dict:
    event = session.get(Event, event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
    return event_dict(event)


@router.put("/{event_id}", dependencies=[Depends(require_role(Role.admin))])
def put_event(event_id: str, body: EventIn, request: Request, session: Session = Depends(get_session)) -> dict:
    if body.id != event_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"body id {body.id!r} differs from {event_id!r}")
    try:
        row = save_event(session, body)
    except VenueFileError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    session.commit()
    request.app.state.hub.reload()
    return event_dict(row)


class OverrideIn(BaseModel):
    state: Literal["cancel_overflow", "overflow_needed", "undecided", "auto"]


@router.post("/{event_id}/decision/override")
def override_decision(
    event_id: str, body: OverrideIn, request: Request, user: User = Depends(require_role(Role.operator))
) -> dict:
    """Set the overflow decision by hand (frozen there); ``auto`` returns it to automatic."""
    hub = request.app.state.hub
    if event_id not in hub.event_ids():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
    if hub.events[event_id].overflow_capacity is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"event {event_id!r} has no overflow event to decide on")
    state = None if body.state == "auto" else DecisionState(body.state)
    hub.override_decision(event_id, state, user.name)
    return hub.snapshot(event_id)["decision"]
