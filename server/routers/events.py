"""Events: times, capacity, overflow event; deletion (admin); operator override of the overflow decision."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import AlertChange, AlertRow, Event, User
from server.db.session import get_session
from server.decision import DecisionState
from server.routers._common import READ, WRITE, errors, not_found, unprocessable
from server.venues import EventIn, VenueFileError, event_dict, save_event

router = APIRouter(prefix="/api/v1/events", tags=["events"])


class OverflowOut(BaseModel):
    name: str | None
    capacity: int
    deadline: str | None
    threshold: float | None


class EventOut(BaseModel):
    id: str
    venue: str
    name: str
    doors_open: str
    start: str
    capacity: int
    expected_show_up: float | None
    timezone: str = "UTC"
    overflow: OverflowOut | None


class DecisionOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    state: str
    since: str | None
    frozen: bool
    override_by: str | None
    candidate: str | None = None
    figures: dict[str, Any] | None = None


@router.get("", dependencies=[Depends(read_access)], response_model=list[EventOut], responses=errors(401))
def list_events(session: Session = Depends(get_session)) -> list[dict]:
    return [event_dict(e) for e in session.scalars(select(Event).order_by(Event.start))]


@router.get("/{event_id}", dependencies=[Depends(read_access)], response_model=EventOut, responses=errors(*READ))
def get_event(event_id: str, session: Session = Depends(get_session)) -> dict:
    event = session.get(Event, event_id)
    if event is None:
        raise not_found(f"no event {event_id!r}")
    return event_dict(event)


@router.put(
    "/{event_id}",
    dependencies=[Depends(require_role(Role.admin))],
    response_model=EventOut,
    responses=errors(400, 401, 403),
)
def put_event(event_id: str, body: EventIn, request: Request, session: Session = Depends(get_session)) -> dict:
    """Create or replace an event (admin). 422 when the venue is unknown or the body id differs from the path."""
    if body.id != event_id:
        raise unprocessable(f"body id {body.id!r} differs from {event_id!r} in the path", ("body", "id"))
    try:
        row = save_event(session, body)
    except VenueFileError as exc:
        raise unprocessable(str(exc), ("body", "venue")) from None
    session.commit()
    request.app.state.hub.reload()
    return event_dict(row)


@router.delete(
    "/{event_id}",
    dependencies=[Depends(require_role(Role.admin))],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(*WRITE),
)
def delete_event(event_id: str, request: Request, session: Session = Depends(get_session)) -> Response:
    """Delete an event with its registrations, decision, time series and alerts (admin)."""
    event = session.get(Event, event_id)
    if event is None:
        raise not_found(f"no event {event_id!r}")
    session.delete(event)  # registrations, summary, decision and samples go with it (ON DELETE CASCADE)
    session.execute(delete(AlertRow).where(AlertRow.event_id == event_id))
    session.execute(delete(AlertChange).where(AlertChange.event_id == event_id))
    session.commit()
    request.app.state.hub.reload()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class OverrideIn(BaseModel):
    state: Literal["cancel_overflow", "overflow_needed", "undecided", "auto"]


@router.post("/{event_id}/decision/override", response_model=DecisionOut, responses=errors(400, *WRITE, 409))
def override_decision(
    event_id: str, body: OverrideIn, request: Request, user: User = Depends(require_role(Role.operator))
) -> dict:
    """Set the overflow decision by hand (frozen there); ``auto`` returns it to automatic."""
    hub = request.app.state.hub
    if event_id not in hub.event_ids():
        raise not_found(f"no event {event_id!r}")
    if hub.events[event_id].info.overflow_capacity is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"event {event_id!r} has no overflow event to decide on")
    state = None if body.state == "auto" else DecisionState(body.state)
    hub.override_decision(event_id, state, user.name)
    return hub.snapshot(event_id)["decision"]
