"""Drawing sections, seats, excluded areas and detections on a frame (snapshots for calibration)."""

from __future__ import annotations

import cv2
import numpy as np

from edge.config import CameraConfig
from edge.detections import Detections
from edge.zones import Layout, SectionTally

_SECTION = (80, 200, 40)  # BGR
_EXCLUDE = (60, 60, 220)
_SEAT = (230, 180, 30)
_PERSON = (0, 215, 255)


def draw_overlay(
    frame: np.ndarray,
    camera: CameraConfig,
    detections: Detections | None = None,
    tallies: dict[str, SectionTally] | None = None,
) -> np.ndarray:
    """A copy of `frame` with the camera's zones, seats and person boxes drawn on it."""
    h, w = frame.shape[:2]
    layout = Layout(camera, w, h)
    out = frame.copy()
    thick = max(1, round(min(w, h) / 360))
    for area in layout.exclude_px():
        cv2.polylines(out, [np.asarray(area, np.int32)], True, _EXCLUDE, thick)
    for sid, poly in layout.polygons_px().items():
        pts = np.asarray(poly, np.int32)
        cv2.polylines(out, [pts], True, _SECTION, thick)
        label = sid
        if tallies and sid in tallies:
            sec = next(s for s in camera.sections if s.id == sid)
            label = f"{sid} {tallies[sid].occupied}/{sec.seats}"
        x, y = pts[:, 0].min(), pts[:, 1].min()
        cv2.putText(out, label, (int(x) + 3, int(y) + 14 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick,
                    _SECTION, thick, cv2.LINE_AA)
    for points in layout.seat_points_px().values():
        for x, y in points:
            cv2.circle(out, (int(x), int(y)), 2 * thick, _SEAT, -1)
    if detections is not None and len(detections):
        anchors = detections.anchors(camera.anchor)
        for (x1, y1, x2, y2), (ax, ay) in zip(detections.xyxy, anchors, strict=True):
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), _PERSON, thick)
            cv2.circle(out, (int(ax), int(ay)), 2 * thick, _PERSON, -1)
    return out
