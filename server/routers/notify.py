"""Organizer notifications: an event's Apprise targets (admin), a test message, and the delivery log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import Event, User
from server.db.session import get_session
from server.notify import DeliveryOut, Notifier, NotifyTarget, masked_url
from server.routers._common import READ, WRITE, errors, not_found

router = APIRouter(prefix="/api/v1", tags=["notifications"])


class TargetsIn(BaseModel):
    targets: list[NotifyTarget] = Field(max_length=50)


class TargetOut(NotifyTarget):
    masked: str = Field(description="The URL without passwords or tokens.")


class TargetsOut(BaseModel):
    event: str
    targets: list[TargetOut]


class TestOut(BaseModel):
    alert_id: str = Field(description="The delivery log of the test is under this id.")
    queued: int
    deliveries: list[str] = Field(description="Ids of the test's deliveries (one per target).")


def _notifier(request: Request) -> Notifier:
    return request.app.state.hub.notifier


def _event(session: Session, event_id: str) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise not_found(f"no event {event_id!r}")
    return event


def _out(event_id: str, targets: list[NotifyTarget]) -> dict:
    return {"event": event_id, "targets": [{**t.model_dump(mode="json"), "masked": masked_url(t.url)} for t in targets]}


@router.get(
    "/events/{event_id}/notify",
    response_model=TargetsOut,
    dependencies=[Depends(require_role(Role.admin))],
    responses=errors(*WRITE),
)
def get_targets(event_id: str, session: Session = Depends(get_session)) -> dict:
    """The event's notification targets with their URLs (admin: URLs hold passwords and tokens)."""
    event = _event(session, event_id)
    return _out(event_id, [NotifyTarget.model_validate(t) for t in event.notify or []])


@router.put(
    "/events/{event_id}/notify",
    response_model=TargetsOut,
    dependencies=[Depends(require_role(Role.admin))],
    responses=errors(400, *WRITE),
)
def put_targets(event_id: str, body: TargetsIn, request: Request, session: Session = Depends(get_session)) -> dict:
    """Replace the event's notification targets (422 names a URL Apprise cannot use)."""
    event = _event(session, event_id)
    event.notify = [t.model_dump(mode="json") for t in body.targets]
    session.commit()
    _notifier(request).set_targets(event_id, body.targets, event.name)
    return _out(event_id, body.targets)


@router.post(
    "/events/{event_id}/notify/test",
    response_model=TestOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(*WRITE),
)
def send_test(
    event_id: str,
    request: Request,
    session: Session = Depends(get_session),
    user: User = Depends(require_role(Role.admin)),
) -> dict:
    """Send a test message to every target of the event (in the background; see its delivery log)."""
    _event(session, event_id)
    alert_id, ids = _notifier(request).send_test(event_id, user.name)
    return {"alert_id": alert_id, "queued": len(ids), "deliveries": ids}


@router.get(
    "/events/{event_id}/deliveries",
    response_model=list[DeliveryOut],
    dependencies=[Depends(read_access)],
    responses=errors(*READ),
)
def event_deliveries(event_id: str, request: Request, session: Session = Depends(get_session)) -> list[DeliveryOut]:
    """Every notification of the event's alerts: target (masked), status, attempts, last error."""
    _event(session, event_id)
    return _notifier(request).event_log(session, event_id)


@router.get(
    "/alerts/{alert_id}/deliveries",
    response_model=list[DeliveryOut],
    dependencies=[Depends(read_access)],
    responses=errors(401),
)
def alert_deliveries(request: Request, alert_id: str = Path(max_length=255)) -> list[DeliveryOut]:
    """The delivery log of one alert (its latest changes), oldest first."""
    return _notifier(request).log(alert_id)
