"""Server-sent events: the live snapshot of an event, pushed on every change (``app.state.hub``).

``GET /api/v1/stream?event=ID`` answers ``text/event-stream`` with ``event: snapshot`` messages whose
data is the JSON of ``GET /api/v1/events/{id}/live``; the hub sends at most 5 per second and at least
one every few seconds (heartbeat). Same access rule as the other live reads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from server.auth import read_access

router = APIRouter(prefix="/api/v1", tags=["live"])


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


@router.get("/stream", dependencies=[Depends(read_access)])
async def stream(request: Request, event: str = Query(..., description="Event id")) -> StreamingResponse:
    """Live snapshots of one event as server-sent events."""
    hub = request.app.state.hub
    if event not in hub.event_ids():
        raise HTTPException(404, f"no event {event!r}")

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for snap in hub.listen(event, heartbeat_s=2.0):
            if await request.is_disconnected():
                break
            yield sse("snapshot", snap)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
