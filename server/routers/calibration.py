"""Calibration over MQTT: ask an edge camera for a snapshot, send it a new layout.

* ``POST /api/v1/calibration/{venue}/{camera}/snapshot`` publishes a `SnapshotRequest` on
  ``.../cmd/snapshot`` and waits for the edge's `Snapshot`; the image is passed to the browser once and
  never stored by the server.
* ``PUT /api/v1/calibration/{venue}/{camera}/layout`` publishes a `Layout` (retained) on ``.../layout``
  and waits for the edge's `LayoutResult`. A refused layout is replaced by the last accepted one (or
  cleared), so an edge restart never picks up a layout it refused.
Both need the operator role.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from server.auth import Role, require_role
from server.routers._common import errors, unprocessable
from turnout import contract

router = APIRouter(prefix="/api/v1/calibration", tags=["calibration"])
REPLY_TIMEOUT_S = 10.0


class SnapshotBody(BaseModel):
    draw: bool = Field(False, description="Let the edge draw its zones and detections on the image.")


class LayoutBody(BaseModel):
    coordinates: Literal["pixels", "normalized"] = "pixels"
    anchor: str | None = None
    sections: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    exclude: list[list[tuple[float, float]]] = Field(default_factory=list)


class Relay:
    """Matches edge replies (snapshot, layout/result) to waiting requests by request id."""

    def __init__(self, mqtt: Any) -> None:
        self.mqtt = mqtt
        self._pending: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes]]] = {}
        self._lock = threading.Lock()
        self.last_good: dict[tuple[str, str], bytes] = {}
        mqtt.subscribe(contract.SNAPSHOT_FILTER, self._on_reply)
        mqtt.subscribe(contract.LAYOUT_RESULT_FILTER, self._on_reply)

    def _on_reply(self, topic: str, payload: bytes) -> None:
        try:
            request_id = json.loads(payload).get("request_id")
        except (ValueError, AttributeError):
            return
        with self._lock:
            entry = self._pending.pop(str(request_id), None) if request_id else None
        if entry is not None:
            loop, fut = entry
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(payload))

    async def ask(self, topic: str, payload: bytes, request_id: str, retain: bool = False) -> bytes:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        with self._lock:
            self._pending[request_id] = (loop, fut)
        try:
            self.mqtt.publish(topic, payload, retain=retain)
            return await asyncio.wait_for(fut, REPLY_TIMEOUT_S)
        finally:
            with self._lock:
                self._pending.pop(request_id, None)


def _relay(request: Request) -> Relay:
    mqtt = getattr(request.app.state, "mqtt", None)
    if mqtt is None or not request.app.state.settings.mqtt_enabled:
        raise HTTPException(503, "MQTT is disabled on this server (mqtt_enabled: false)")
    relay = getattr(request.app.state, "calibration_relay", None)
    if relay is None:
        relay = request.app.state.calibration_relay = Relay(mqtt)
    return relay


def _check_camera(venue: str, camera: str) -> None:
    try:
        contract.snapshot_topic(venue, camera)
    except ValueError as exc:
        raise unprocessable(str(exc), ("path", "camera")) from None


# What the edge-facing routes answer besides 200 and 422 (an unreachable or silent edge, a refused request).
EDGE_ERRORS = errors(400, 401, 403, 409, 502, 503, 504)


@router.get("/cameras", dependencies=[Depends(require_role(Role.operator))], responses=errors(401, 403))
def cameras(request: Request) -> list[dict[str, Any]]:
    """Edge cameras known to the server (simulated ``sim-*`` cameras cannot be calibrated)."""
    hub = request.app.state.hub
    out = []
    with hub._lock:
        for venue in hub.venues.values():
            for cam in venue.cameras.values():
                if not cam.id.startswith("sim-"):
                    out.append({"venue": venue.id, "camera": cam.id, "state": cam.state})
    return sorted(out, key=lambda c: (c["venue"], c["camera"]))


@router.post("/{venue}/{camera}/snapshot", dependencies=[Depends(require_role(Role.operator))], responses=EDGE_ERRORS)
async def snapshot(venue: str, camera: str, request: Request, body: SnapshotBody | None = None) -> JSONResponse:
    """One snapshot from the edge camera (JPEG as base64, plus its current zones); never stored."""
    _check_camera(venue, camera)
    relay = _relay(request)
    req = contract.SnapshotRequest(request_id=uuid.uuid4().hex, draw=(body or SnapshotBody()).draw)
    try:
        raw = await relay.ask(contract.snapshot_request_topic(venue, camera), req.to_json(), req.request_id)
    except TimeoutError:
        raise HTTPException(504, f"camera {camera} did not answer within {REPLY_TIMEOUT_S:.0f} s") from None
    try:
        snap = contract.Snapshot.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(502, f"camera {camera} sent an invalid snapshot: {exc.error_count()} errors") from None
    if snap.error:
        raise HTTPException(409, f"camera {camera}: {snap.error}")
    return JSONResponse(snap.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.put("/{venue}/{camera}/layout", dependencies=[Depends(require_role(Role.operator))], responses=EDGE_ERRORS)
async def layout(venue: str, camera: str, body: LayoutBody, request: Request) -> dict[str, Any]:
    """Send new zones to the edge (retained) and return its verdict: ``{ok, errors, request_id}``."""
    _check_camera(venue, camera)
    relay = _relay(request)
    try:
        msg = contract.Layout(request_id=uuid.uuid4().hex, **body.model_dump())
    except ValidationError as exc:
        raise unprocessable(str(exc)) from None
    result = await push_layout(relay, venue, camera, msg)
    return {"ok": result.ok, "errors": result.errors, "request_id": msg.request_id}


async def push_layout(relay: Relay, venue: str, camera: str, msg: contract.Layout) -> contract.LayoutResult:
    """Publish ``msg`` (retained) on the camera's layout topic and return the edge's verdict.

    A refused layout is replaced by the last accepted one (or cleared): the previous layout stays in force.
    Raises HTTPException 504 (no answer) or 502 (an invalid answer).
    """
    topic = contract.layout_topic(venue, camera)
    payload = msg.to_json()
    try:
        raw = await relay.ask(topic, payload, msg.request_id, retain=True)
    except TimeoutError:
        raise HTTPException(
            504, f"camera {camera} did not answer within {REPLY_TIMEOUT_S:.0f} s (the layout stays retained)"
        ) from None
    try:
        result = contract.LayoutResult.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(
            502,
            f"camera {camera} sent an invalid layout result: {exc.error_count()} errors (the layout stays retained)",
        ) from None
    key = (venue, camera)
    if result.ok:
        relay.last_good[key] = payload
    else:  # never leave a refused layout retained
        relay.mqtt.publish(topic, relay.last_good.get(key, b""), retain=True)
    return result
