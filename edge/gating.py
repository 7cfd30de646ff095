"""Static-scene gating: a tile whose pixels barely changed since its last inference reuses its detections.

Seated audiences hardly move between analyses, so most tiles of a seated camera look the same frame after
frame. `TileGate` keeps, per tile, a small grey thumbnail (64x64, area-averaged: sensor noise and compression
artefacts average out) of the pixels the model last saw and the boxes it found there. A tile runs again when
more than ``threshold`` of its thumbnail pixels differ by more than ``pixel_delta`` grey levels from that
reference (a person sitting down, standing up, arriving) or when its last inference is ``refresh_s`` old
(slow changes: light, a person who sat down too slowly to cross the threshold in any one step). Comparing with
the pixels of the last *inference*, not of the previous frame, means slow drifts add up and are caught.

One gate per camera (its state is the camera's tiles); times are the frames' own (seconds), so a video file
analysed faster than real time is gated as it would be live.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import GateConfig

THUMB = 64
"""Thumbnail side (pixels) the change test is made on."""

Key = tuple[int, int, int, int]
"""A tile's source rectangle (x0, y0, x1, y1); the full-frame pass is (0, 0, w, h)."""


@dataclass(slots=True)
class TileResult:
    """What one tile's inference found, in source pixels (before merging across tiles)."""

    xyxy: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    truncated: np.ndarray  # (N,) bool


@dataclass(slots=True)
class _Entry:
    thumb: np.ndarray
    result: TileResult
    at: float
    conf: float


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A BGR crop -> THUMB x THUMB grey int16 thumbnail (area average)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.int16)


class TileGate:
    """Per-tile memory of one camera: decides which tiles must run and hands back the others' detections."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        self._tiles: dict[Key, _Entry] = {}
        self._frame: tuple[int, int] | None = None
        self.run = 0  # tiles inferred since the gate was made
        self.reused = 0  # tiles whose detections were reused

    def reset(self) -> None:
        """Forget every tile (the next frame runs them all)."""
        self._tiles.clear()

    def changed(self, key: Key, thumb: np.ndarray) -> float:
        """Share of the tile's thumbnail pixels changed since its last inference (1.0 for an unseen tile)."""
        entry = self._tiles.get(key)
        if entry is None:
            return 1.0
        return float(np.count_nonzero(np.abs(thumb - entry.thumb) > self.cfg.pixel_delta)) / thumb.size

    def reuse(self, key: Key, thumb: np.ndarray, now: float, conf: float, frame: tuple[int, int]) -> TileResult | None:
        """The tile's last detections when it may skip inference at time ``now`` (seconds), else None."""
        if frame != self._frame:  # another frame size: every key is new
            self._tiles.clear()
            self._frame = frame
        entry = self._tiles.get(key)
        if (
            entry is None
            or entry.conf != conf
            or not 0.0 <= now - entry.at < self.cfg.refresh_s
            or self.changed(key, thumb) > self.cfg.threshold
        ):
            return None
        self.reused += 1
        return entry.result

    def store(self, key: Key, thumb: np.ndarray, result: TileResult, now: float, conf: float) -> None:
        """Remember what inference found in a tile at ``now`` and the pixels it saw."""
        self._tiles[key] = _Entry(thumb, result, now, conf)
        self.run += 1
