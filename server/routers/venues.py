"""Venues with their sections and cameras."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth import Role, read_access, require_role
from server.db.models import Venue
from server.db.session import get_session
from server.venues import VenueIn, save_venue, venue_dict

router = APIRouter(prefix="/api/v1/venues", tags=["venues"])


@router.get("", dependencies=[Depends(read_access)])
def list_venues(session: Session = Depends(get_session)) -> list[dict]:
    return [venue_dict(session, v) for v in session.scalars(select(Venue).order_by(Venue.id))]


@router.get("/{venue_id}", dependencies=[Depends(read_access)])
def get_venue(venue_id: str, session: Session = Depends(get_session)) -> dict:
    venue = session.get(Venue, venue_id)
    if venue is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no venue {venue_id!r}")
    return venue_dict(session, venue)


@router.put("/{venue_id}", dependencies=[Depends(require_role(Role.admin))])
def put_venue(venue_id: str, body: VenueIn, request: Request, session: Session = Depends(get_session)) -> dict:
    if body.id != venue_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"body id {body.id!r} differs from {venue_id!r}")
    row = save_venue(session, body)
    session.commit()
    request.app.state.hub.reload()
    return venue_dict(session, row)
