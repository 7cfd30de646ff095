"""Edge-side handling of the operator commands of one camera: snapshot requests and new layouts.

* ``.../cmd/snapshot`` (`SnapshotRequest`): the latest analysed frame, with sections, seats and detections
  drawn on it, is JPEG-encoded and published once on ``.../snapshot`` (`Snapshot`). It is never stored:
  images leave the device only when an operator asks for one.
* ``.../layout`` (`Layout`, retained): new sections/seats/excluded areas in the edge config's format.
  They are merged into the camera's current config and validated with the same pydantic models as the
  YAML file (plus a polygon check on the real frame size); on success the pipeline applies them, and in
  every case the edge answers on ``.../layout/result`` (`LayoutResult`, with the errors when refused).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np
from pydantic import ValidationError

from edge.config import CameraConfig
from edge.detections import Detections
from turnout import contract

log = logging.getLogger(__name__)

MAX_LAYOUT_BYTES = 1024 * 1024
JPEG_QUALITY = 85


class CommandPublisher(Protocol):
    """The part of `edge.publisher.Publisher` the command handler uses."""

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None: ...

    def publish_raw(self, topic: str, payload: bytes, retain: bool = False) -> Any: ...


LatestFrame = Callable[[], tuple[np.ndarray, Detections] | None]


class CommandHandler:
    """Answers snapshot requests and applies validated layouts for one camera."""

    def __init__(
        self,
        publisher: CommandPublisher,
        venue: str,
        camera: str,
        latest: LatestFrame,
        current_layout: Callable[[], CameraConfig],
        apply_layout: Callable[[CameraConfig], None],
    ) -> None:
        self.publisher = publisher
        self.venue = venue
        self.camera = camera
        self.latest = latest
        self.current_layout = current_layout
        self.apply_layout = apply_layout
        self._lock = threading.Lock()  # one command at a time per camera
        self._last_layout: bytes | None = None
        self.snapshots_sent = 0
        self.layouts_applied = 0
        self.layouts_rejected = 0

    # ------------------------------------------------------------------------------------- wiring
    def attach(self) -> CommandHandler:
        """Subscribe to this camera's command topics (the retained layout arrives at once if set)."""
        self.publisher.subscribe(contract.snapshot_request_topic(self.venue, self.camera), self.on_snapshot)
        self.publisher.subscribe(contract.layout_topic(self.venue, self.camera), self.on_layout)
        return self

    # ------------------------------------------------------------------------------------ snapshot
    def on_snapshot(self, topic: str, payload: bytes) -> None:
        try:
            request = contract.decode(contract.SnapshotRequest, payload)
        except contract.PayloadError as exc:
            log.warning("camera %s: ignoring snapshot request on %s: %s", self.camera, topic, exc)
            return
        with self._lock:
            reply = self.make_snapshot(request)
        self.publisher.publish_raw(contract.snapshot_topic(self.venue, self.camera), reply.to_json())
        self.snapshots_sent += 1
        log.info("camera %s: snapshot %s sent (%s)", self.camera, request.request_id, reply.error or "ok")

    def make_snapshot(self, request: contract.SnapshotRequest) -> contract.Snapshot:
        """The reply to one request: the drawn JPEG, or an error saying why there is none."""
        base = {"venue": self.venue, "camera": self.camera, "request_id": request.request_id}
        latest = self.latest()
        if latest is None:
            return contract.Snapshot(**base, ts=contract.utcnow(), error="no frame analysed yet; try again")
        frame, detections = latest
        image = draw(frame, self.current_layout(), detections) if request.draw else frame
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return contract.Snapshot(**base, ts=contract.utcnow(), error="JPEG encoding failed")
        if len(jpeg) > contract.MAX_SNAPSHOT_BYTES:
            return contract.Snapshot(**base, ts=contract.utcnow(), error=f"JPEG of {len(jpeg)} bytes too large")
        h, w = image.shape[:2]
        return contract.Snapshot(
            **base,
            ts=contract.utcnow(),
            width=w,
            height=h,
            jpeg_b64=base64.b64encode(jpeg.tobytes()).decode("ascii"),
            layout=layout_of(self.current_layout()),
        )

    # -------------------------------------------------------------------------------------- layout
    def on_layout(self, topic: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        with self._lock:
            if payload == self._last_layout:  # the retained copy again after a reconnect
                return
            self._last_layout = payload
            request_id, cfg, errors = self.validate_layout(payload)
            if cfg is not None:
                try:
                    self.apply_layout(cfg)
                except Exception as exc:  # the pipeline refused it: report, keep running
                    errors = [f"could not apply the layout: {exc}"]
            ok = not errors
            self.layouts_applied += ok
            self.layouts_rejected += not ok
        result = contract.LayoutResult(
            venue=self.venue,
            camera=self.camera,
            ok=ok,
            ts=contract.utcnow(),
            errors=errors[:50],
            request_id=request_id,
        )
        self.publisher.publish_raw(contract.layout_result_topic(self.venue, self.camera), result.to_json())
        log.info("camera %s: layout %s %s", self.camera, request_id, "applied" if ok else f"refused: {errors}")

    def validate_layout(self, payload: bytes) -> tuple[str | None, CameraConfig | None, list[str]]:
        """``(request_id, merged config or None, errors)`` for one layout payload."""
        if len(payload) > MAX_LAYOUT_BYTES:
            return None, None, [f"layout of {len(payload)} bytes exceeds {MAX_LAYOUT_BYTES}"]
        try:
            layout = contract.Layout.model_validate_json(payload)
        except ValidationError as exc:
            return None, None, _errors(exc)
        current = self.current_layout()
        merged: dict[str, Any] = current.model_dump()
        merged.update(coordinates=layout.coordinates, sections=layout.sections, exclude=layout.exclude)
        if layout.anchor is not None:
            merged["anchor"] = layout.anchor
        try:
            cfg = CameraConfig.model_validate(merged)
        except ValidationError as exc:
            return layout.request_id, None, _errors(exc)
        latest = self.latest()
        if latest is not None:
            from edge.zones import Layout as Zones

            h, w = latest[0].shape[:2]
            try:
                Zones(cfg, w, h)
            except ValueError as exc:
                return layout.request_id, None, [str(exc)]
        return layout.request_id, cfg, []


def layout_of(camera: CameraConfig) -> dict[str, Any]:
    """The editable zones of a camera, in the `Layout` payload's fields."""
    data = camera.model_dump(mode="json", include={"coordinates", "anchor", "sections", "exclude"})
    return data


def _errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'layout'}: {e['msg']}" for e in exc.errors()]


def draw(frame: np.ndarray, camera: CameraConfig, detections: Detections) -> np.ndarray:
    """Sections, seats and detections over a copy of `frame` (edge.overlay when present)."""
    try:
        from edge.overlay import draw_overlay
    except ImportError:
        return _draw_basic(frame, camera, detections)
    return draw_overlay(frame, camera, detections)


def _draw_basic(frame: np.ndarray, camera: CameraConfig, detections: Detections) -> np.ndarray:
    image = frame.copy()
    h, w = image.shape[:2]
    sx, sy = (w, h) if camera.coordinates == "normalized" else (1.0, 1.0)

    def pts(poly: list[tuple[float, float]]) -> np.ndarray:
        return np.array([[x * sx, y * sy] for x, y in poly], np.int32).reshape(-1, 1, 2)

    for area in camera.exclude:
        cv2.polylines(image, [pts(area)], True, (80, 80, 80), 2)
    for sec in camera.sections:
        poly = pts(sec.polygon)
        cv2.polylines(image, [poly], True, (0, 200, 255), 2)
        x, y = poly[:, 0, :].min(axis=0)
        cv2.putText(image, f"{sec.id} ({sec.seats})", (int(x) + 4, int(y) + 18), 0, 0.55, (0, 200, 255), 2)
        for seat in sec.seat_map:
            if seat.point is not None:
                cv2.circle(image, (int(seat.point[0] * sx), int(seat.point[1] * sy)), 4, (255, 200, 0), -1)
            elif seat.polygon is not None:
                cv2.polylines(image, [pts(seat.polygon)], True, (255, 200, 0), 1)
    for x1, y1, x2, y2 in detections.xyxy.astype(int):
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
    return image
