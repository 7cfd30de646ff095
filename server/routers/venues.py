"""Venues with their sections and cameras."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import Venue
from server.db.session import get_session
from server.routers._common import READ, errors, not_found, unprocessable
from server.venues import VenueIn, save_venue, venue_dict

router = APIRouter(prefix="/api/v1/venues", tags=["venues"])


class SectionOut(BaseModel):
    id: str
    name: str
    seats: int
    cameras: list[str]


class CameraOut(BaseModel):
    id: str
    name: str


class VenueOut(BaseModel):
    id: str
    name: str
    seats: int
    sections: list[SectionOut]
    cameras: list[CameraOut]


@router.get("", dependencies=[Depends(read_access)], response_model=list[VenueOut], responses=errors(401))
def list_venues(session: Session = Depends(get_session)) -> list[dict]:
    return [venue_dict(session, v) for v in session.scalars(select(Venue).order_by(Venue.id))]


@router.get("/{venue_id}", dependencies=[Depends(read_access)], response_model=VenueOut, responses=errors(*READ))
def get_venue(venue_id: str, session: Session = Depends(get_session)) -> dict:
    venue = session.get(Venue, venue_id)
    if venue is None:
        raise not_found(f"no venue {venue_id!r}")
    return venue_dict(session, venue)


@router.put(
    "/{venue_id}",
    dependencies=[Depends(require_role(Role.admin))],
    response_model=VenueOut,
    responses=errors(400, 401, 403),
)
def put_venue(venue_id: str, body: VenueIn, request: Request, session: Session = Depends(get_session)) -> dict:
    if body.id != venue_id:
        raise unprocessable(f"body id {body.id!r} differs from {venue_id!r} in the path", ("body", "id"))
    row = save_venue(session, body)
    session.commit()
    request.app.state.hub.reload()
    return venue_dict(session, row)
