"""Static-scene gating: a tile whose pixels barely changed since its last inference reuses its detections.

Seated audiences hardly move between analyses, so most tiles of a seated camera look the same frame after
frame. `TileGate` keeps, per tile, a small grey thumbnail (64x64, area-averaged: sensor noise and compression
artefacts average out) of the pixels the model last saw and the boxes it found there. A tile runs again when
more than ``threshold`` of its thumbnail pixels differ by more than ``pixel_delta`` grey levels from that
reference (a person sitting down, standing up, arriving), or more than ``BOX_FACTOR`` x ``threshold`` of the
pixels inside one of the boxes found there last time (that person moved or left), or when its last inference is ``refresh_s`` old
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

BOX_FACTOR = 10.0
"""A box found at the last inference counts as changed when this many times ``threshold`` of it changed."""
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
        """How much the tile changed since its last inference, as a share of its pixels (1.0: unseen tile).

        The larger of the share over the whole tile and, per box found there last time, the share within
        the box divided by ``BOX_FACTOR`` (a person who leaves or stands up changes their own box a lot
        but may be a small part of the tile).
        """
        entry = self._tiles.get(key)
        if entry is None:
            return 1.0
        diff = np.abs(thumb - entry.thumb) > self.cfg.pixel_delta
        share = float(np.count_nonzero(diff)) / diff.size
        if len(entry.result.xyxy):
            x0, y0, x1, y1 = key
            sx, sy = THUMB / max(1, x1 - x0), THUMB / max(1, y1 - y0)
            for bx0, by0, bx1, by1 in entry.result.xyxy:
                c0, c1 = int((bx0 - x0) * sx), int(np.ceil((bx1 - x0) * sx))
                r0, r1 = int((by0 - y0) * sy), int(np.ceil((by1 - y0) * sy))
                inside = diff[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)]
                if inside.size:
                    share = max(share, float(inside.mean()) / BOX_FACTOR)
        return share

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

    def ran_at(self, key: Key) -> float | None:
        """When the tile last ran (seconds), None when it never did."""
        entry = self._tiles.get(key)
        return None if entry is None else entry.at

    def store(self, key: Key, thumb: np.ndarray, result: TileResult, now: float, conf: float) -> None:
        """Remember what inference found in a tile at ``now`` and the pixels it saw."""
        self._tiles[key] = _Entry(thumb, result, now, conf)
        self.run += 1
