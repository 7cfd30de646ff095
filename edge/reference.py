"""Empty-seat reference: a per-seat appearance model of "empty", scored on every analysed frame.

Representation (chosen on the PKLot UFPR05 subset, docs/detection.md): the *gradient of the log
intensity* inside each seat polygon. A change of light is (to first order) a multiplication of the
intensity, ``I' = k I``; ``d log I' = d log I``, so dimming, a brighter day or a colour cast leave the
representation unchanged without estimating any gain, while a person or a car adds structure that the empty
seat does not have. Per seat two numbers are computed against the reference:

* ``similarity``: the normalised correlation of the two gradient fields (``Σ g·r / √(Σ|g|² Σ|r|²)``);
  1 = the same structure as the empty seat, ~0 = unrelated structure.
* ``edge_gain``: ``log(Σ|g|² / Σ|r|²)``: more texture than the empty seat (> 0) or less (< 0, e.g. shade).

A seat *changed* when ``similarity < similarity_min`` and ``edge_gain > edge_gain_min``: an occupant
replaces the seat's structure *and* adds texture; a shadow edge or darkness lowers the similarity but does not
add texture. Before scoring, the frame is registered to the reference (a translation found by OpenCV's ECC on
the pixels outside every seat), because a mast-mounted camera moves a few pixels between days and a 5 px
shift is enough to decorrelate thin seat edges.

The reference adapts slowly (`EmptyReference.adapt`) only for seats the caller believes empty, so a person
sitting still is never blended in (edge/seatref.py decides which seats qualify: no detection, not changed,
and very similar to the reference for a while).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class ReferenceParams:
    """How frames are compared with the reference (defaults measured on PKLot, docs/benchmarks.md)."""

    similarity_min: float = 0.45
    edge_gain_min: float = 0.0
    blur_sigma: float = 1.5  # pixels; removes sensor/JPEG noise before the gradient
    log_offset: float = 8.0  # log(I + offset): keeps the gradients of near-black pixels finite
    align: bool = True
    max_shift_px: float = 24.0  # a larger ECC shift is a failed registration (frame used unshifted)
    align_scale: float = 0.5  # registration runs on a frame scaled by this (speed)


@dataclass(frozen=True, slots=True)
class SeatScores:
    """One frame scored against the reference, per seat in `EmptyReference.ids` order."""

    similarity: np.ndarray  # (S,) float32, -1..1
    edge_gain: np.ndarray  # (S,) float32
    changed: np.ndarray  # (S,) bool: the seat does not look like its empty reference
    shift: tuple[float, float]  # (dx, dy) of the frame relative to the reference, pixels
    gain: float  # median intensity ratio frame / reference over unchanged seats (lighting, for logs)


@dataclass
class _Seat:
    x0: int
    y0: int
    x1: int
    y1: int
    mask: np.ndarray  # bool, (y1-y0, x1-x0)
    rx: np.ndarray  # reference log-gradients inside the mask
    ry: np.ndarray
    energy: float
    level: float  # mean reference intensity


class EmptyReference:
    """The empty venue as one camera sees it, with the seat polygons it is scored on.

    ``image``: the reference frame (BGR or grey, e.g. the median of several frames of the empty venue);
    ``seats``: seat id -> polygon in the image's pixels. Seats smaller than 12 pixels are refused (nothing
    to compare).
    """

    def __init__(self, image: np.ndarray, seats: Mapping[str, Polygon], params: ReferenceParams | None = None):
        if image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(f"reference image must be an H x W (x 3) array, got shape {image.shape}")
        if not seats:
            raise ValueError("an empty-seat reference needs at least one seat polygon")
        self.params = params or ReferenceParams()
        self.size = (int(image.shape[1]), int(image.shape[0]))
        self.ids: list[str] = list(seats)
        self._grey = self._to_grey(image)
        self._gx, self._gy = self._log_gradients(self._grey)
        self._seats = [self._seat(sid, np.asarray(poly, np.float32)) for sid, poly in seats.items()]
        self._static = self._static_mask()

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_frames(
        cls, frames: Sequence[np.ndarray], seats: Mapping[str, Polygon], params: ReferenceParams | None = None
    ) -> EmptyReference:
        """The per-pixel median of several frames (someone walking through is removed) as the reference."""
        return cls(median_frame(frames), seats, params)

    def _seat(self, sid: str, poly: np.ndarray) -> _Seat:
        w, h = self.size
        if poly.ndim != 2 or poly.shape[0] < 3 or poly.shape[1] != 2:
            raise ValueError(f"seat {sid}: polygon needs at least 3 (x, y) points")
        x0, y0 = np.floor(poly.min(0)).astype(int)
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"seat {sid}: polygon lies outside the {w}x{h} reference image")
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(poly - (x0, y0)).astype(np.int32)], 1)
        if int(mask.sum()) < 12:
            raise ValueError(f"seat {sid}: polygon covers {int(mask.sum())} pixels, too small to compare (< 12)")
        m = mask.astype(bool)
        rx, ry = self._gx[y0:y1, x0:x1][m], self._gy[y0:y1, x0:x1][m]
        level = float(self._grey[y0:y1, x0:x1][m].mean())
        return _Seat(x0, y0, x1, y1, m, rx, ry, float((rx * rx + ry * ry).sum()), level)

    def _static_mask(self) -> np.ndarray | None:
        """Pixels outside every seat (dilated), on which the frame is registered; None when too few."""
        w, h = self.size
        s = self.params.align_scale
        seats = np.zeros((h, w), np.uint8)
        for seat in self._seats:
            seats[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask] = 1
        seats = cv2.dilate(seats, np.ones((15, 15), np.uint8))  # cars/people spill over their polygon
        static = cv2.resize(1 - seats, (round(w * s), round(h * s)), interpolation=cv2.INTER_NEAREST)
        return static if static.mean() >= 0.05 else None

    # ------------------------------------------------------------------------------------------ scoring
    def _to_grey(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        return grey.astype(np.float32)

    def _log_gradients(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        smooth = cv2.GaussianBlur(grey, (0, 0), self.params.blur_sigma)
        log = np.log(smooth + self.params.log_offset)
        return cv2.Sobel(log, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(log, cv2.CV_32F, 0, 1, ksize=3)

    def register(self, grey: np.ndarray) -> tuple[float, float]:
        """Translation (dx, dy) of a grey frame relative to the reference (0, 0 when registration fails)."""
        p = self.params
        if not p.align or self._static is None:
            return 0.0, 0.0
        s = p.align_scale
        size = self._static.shape[::-1]
        ref = cv2.resize(self._grey, size, interpolation=cv2.INTER_AREA)
        cur = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        try:
            _, warp = cv2.findTransformECC(ref, cur, warp, cv2.MOTION_TRANSLATION, criteria, self._static, 5)
        except cv2.error:  # did not converge (a frame with no texture, a covered lens)
            return 0.0, 0.0
        dx, dy = float(warp[0, 2]) / s, float(warp[1, 2]) / s
        if not np.isfinite([dx, dy]).all() or np.hypot(dx, dy) > p.max_shift_px:
            return 0.0, 0.0
        return dx, dy

    def aligned_grey(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The frame in grey, moved onto the reference's pixels, and the shift that was undone."""
        if frame.shape[1::-1] != self.size:
            raise ValueError(
                f"frame is {frame.shape[1]}x{frame.shape[0]} but the reference is {self.size[0]}x{self.size[1]}"
            )
        grey = self._to_grey(frame)
        dx, dy = self.register(grey)
        if (dx, dy) != (0.0, 0.0):
            m = np.float32([[1, 0, -dx], [0, 1, -dy]])
            grey = cv2.warpAffine(grey, m, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return grey, (dx, dy)

    def score(self, frame: np.ndarray) -> SeatScores:
        """Compare every seat of one frame (same size as the reference) with its empty appearance."""
        grey, shift = self.aligned_grey(frame)
        gx, gy = self._log_gradients(grey)
        n = len(self._seats)
        sim = np.empty(n, np.float32)
        gain_edges = np.empty(n, np.float32)
        ratio = np.empty(n, np.float32)
        for i, seat in enumerate(self._seats):
            fx = gx[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask]
            fy = gy[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask]
            energy = float((fx * fx + fy * fy).sum())
            sim[i] = float((fx * seat.rx + fy * seat.ry).sum()) / np.sqrt(energy * seat.energy + 1e-12)
            gain_edges[i] = np.log((energy + 1e-4 * seat.mask.sum()) / (seat.energy + 1e-4 * seat.mask.sum()))
            level = float(grey[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask].mean())
            ratio[i] = (level + 1.0) / (seat.level + 1.0)
        p = self.params
        changed = (sim < p.similarity_min) & (gain_edges > p.edge_gain_min)
        gain = float(np.median(ratio[~changed])) if (~changed).any() else float("nan")
        return SeatScores(sim, gain_edges, changed, shift, gain)

    # ------------------------------------------------------------------------------------------ adapting
    def adapt(self, frame: np.ndarray, seats: np.ndarray, rate: float, shift: tuple[float, float] | None = None) -> int:
        """Blend the frame into the reference of the seats in the boolean mask ``seats`` by ``rate`` (0..1),
        in the log domain (a gradual lighting change is followed, whatever its gain); how many seats changed.

        Only for seats believed empty: the caller's guard is what keeps a still person out of the reference.
        """
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"adapt rate must lie in (0, 1], got {rate}")
        idx = np.flatnonzero(seats)
        if idx.size == 0:
            return 0
        if shift is None:
            grey, _ = self.aligned_grey(frame)
        else:
            grey = self._to_grey(frame)
            if shift != (0.0, 0.0):
                m = np.float32([[1, 0, -shift[0]], [0, 1, -shift[1]]])
                grey = cv2.warpAffine(grey, m, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        off = self.params.log_offset
        for i in idx:
            seat = self._seats[int(i)]
            box = (slice(seat.y0, seat.y1), slice(seat.x0, seat.x1))
            old, new = np.log(self._grey[box] + off), np.log(grey[box] + off)
            blended = np.exp(old + rate * (new - old) * seat.mask) - off
            self._grey[box] = blended
        # recompute gradients of the touched region only (seat boxes plus the Sobel/blur border)
        pad = int(np.ceil(4 * self.params.blur_sigma)) + 2
        h, w = self._grey.shape
        for i in idx:
            seat = self._seats[int(i)]
            y0, y1 = max(seat.y0 - pad, 0), min(seat.y1 + pad, h)
            x0, x1 = max(seat.x0 - pad, 0), min(seat.x1 + pad, w)
            gx, gy = self._log_gradients(self._grey[y0:y1, x0:x1])
            self._gx[seat.y0 : seat.y1, seat.x0 : seat.x1] = gx[seat.y0 - y0 : seat.y1 - y0, seat.x0 - x0 : seat.x1 - x0]
            self._gy[seat.y0 : seat.y1, seat.x0 : seat.x1] = gy[seat.y0 - y0 : seat.y1 - y0, seat.x0 - x0 : seat.x1 - x0]
            rx = self._gx[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask]
            ry = self._gy[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask]
            seat.rx, seat.ry, seat.energy = rx, ry, float((rx * rx + ry * ry).sum())
            seat.level = float(self._grey[seat.y0 : seat.y1, seat.x0 : seat.x1][seat.mask].mean())
        return int(idx.size)

    @property
    def image(self) -> np.ndarray:
        """The current (possibly adapted) reference as an 8-bit grey image."""
        return np.clip(self._grey + 0.5, 0, 255).astype(np.uint8)


def median_frame(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel median of frames of one size (uint8)."""
    if not frames:
        raise ValueError("no frames to build a reference from")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"reference frames differ in size: {sorted(shapes)}")
    return np.median(np.stack(frames), axis=0).astype(np.uint8)


def raw_difference(frame: np.ndarray, reference: np.ndarray, seats: Mapping[str, Polygon]) -> np.ndarray:
    """Naive baseline (for benchmarks and tests): mean absolute grey difference per seat, no registration
    and no lighting normalisation."""
    a = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    b = cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY).astype(np.float32)
    diff = np.abs(a - b)
    out = np.empty(len(seats), np.float32)
    for i, poly in enumerate(seats.values()):
        mask = np.zeros(a.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(poly)).astype(np.int32)], 1)
        out[i] = float(diff[mask.astype(bool)].mean())
    return out
