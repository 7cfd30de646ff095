"""Live figures of an event (the same JSON the dashboard's stream sends)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status

from server.auth import read_access
from server.routers._common import READ, errors

router = APIRouter(prefix="/api/v1", tags=["live"])


@router.get("/events/{event_id}/live", dependencies=[Depends(read_access)], responses=errors(*READ))
def live(event_id: str, request: Request) -> dict:
    try:
        return request.app.state.hub.snapshot(event_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}") from None


@router.get("/ingest/stats", dependencies=[Depends(read_access)], responses=errors(401))
def ingest_stats(request: Request) -> dict:
    """Messages received, accepted and rejected (by reason) since the server started."""
    return dict(request.app.state.hub.counters)
