"""The empty-seat reference on the edge: storing it, capturing it, and fusing it with detections.

* Storage: ``{state_dir}/reference/{camera}.png`` (the empty venue, viewable) and ``{camera}.json``
  (when, how many frames, people seen, size). A new reference replaces both atomically; a refused one
  changes nothing.
* Capture (`capture`): the per-pixel median of several frames; refused (`ReferenceRefused`, naming the
  count) when the detector finds more than ``reference.max_people`` people in the sections.
* Fusion (`SeatFusion`): per analysed frame, a seat polygon is *hit* when a detection's anchor lies in it
  (`Layout.count`), when the reference says the seat changed, or either (``reference.mode``); the section's
  `SectionSmoother` then applies the hysteresis in time. Seats with only a point have no appearance to
  compare and stay detection-only.
* Adaptation: a seat blends the current frame into its reference (``adapt_rate``) only after
  ``adapt_after_s`` seconds without any hit, and only while it is already ``adapt_similarity`` similar:
  a person who sits still keeps the seat hit (changed and/or detected), so they are never absorbed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig
from edge.detections import Detections
from edge.reference import EmptyReference, ReferenceParams, median_frame
from edge.zones import Layout, SectionTally

log = logging.getLogger(__name__)

Detect = Callable[[np.ndarray], Detections]


MIN_SEAT_AREA = 24
"""Seat polygons smaller than this (pixels) are not compared with the reference (detection-only)."""


class ReferenceRefused(ValueError):
    """A captured reference cannot be used (people in it); the message says why and what was kept."""


@dataclass(frozen=True, slots=True)
class StoredReference:
    image: np.ndarray  # BGR, the empty venue at the video's own size
    captured_at: datetime
    frames: int
    people: int


def reference_paths(state_dir: Path, camera_id: str) -> tuple[Path, Path]:
    folder = Path(state_dir) / "reference"
    return folder / f"{camera_id}.png", folder / f"{camera_id}.json"


def load_reference(state_dir: Path, camera_id: str) -> StoredReference | None:
    """The camera's stored reference, or None when there is none (or it cannot be read: logged)."""
    png, meta = reference_paths(state_dir, camera_id)
    if not png.is_file() or not meta.is_file():
        return None
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    try:
        info = json.loads(meta.read_text())
        at = datetime.fromisoformat(info["captured_at"])
        frames, people = int(info["frames"]), int(info["people"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("camera %s: reference %s unreadable (%s); counting without it", camera_id, meta, exc)
        return None
    if image is None:
        log.warning("camera %s: reference image %s unreadable; counting without it", camera_id, png)
        return None
    return StoredReference(image, at, frames, people)


def save_reference(state_dir: Path, camera_id: str, ref: StoredReference) -> Path:
    """Write the image and its metadata (temporary files, then renamed); the image's path."""
    png, meta = reference_paths(state_dir, camera_id)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp_png, tmp_meta = png.with_suffix(".tmp.png"), meta.with_suffix(".tmp.json")
    if not cv2.imwrite(str(tmp_png), ref.image):
        raise OSError(f"cannot write {tmp_png}")
    info = {
        "camera": camera_id,
        "captured_at": ref.captured_at.isoformat(),
        "frames": ref.frames,
        "people": ref.people,
        "size": [int(ref.image.shape[1]), int(ref.image.shape[0])],
    }
    tmp_meta.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp_png, png)
    os.replace(tmp_meta, meta)
    return png


def people_in_sections(layout: Layout, dets: Detections) -> int:
    return int((layout.assign(dets) >= 0).sum())


def capture(
    frames: Sequence[np.ndarray], detect: Detect, camera: CameraConfig, previous: StoredReference | None = None
) -> StoredReference:
    """Build a reference from frames of the empty venue, or raise `ReferenceRefused` naming the people seen.

    People = the larger of the median per-frame count and the count on the median image (someone who sat
    through the whole capture is in the median image; someone walking through is not).
    """
    image = median_frame(list(frames))
    layout = Layout(camera, image.shape[1], image.shape[0])
    per_frame = [people_in_sections(layout, detect(f)) for f in frames]
    on_median = people_in_sections(layout, detect(image))
    people = max(int(np.median(per_frame)), on_median)
    limit = camera.reference.max_people
    if people > limit:
        kept = (
            f"previous reference kept (captured {previous.captured_at:%Y-%m-%d %H:%M} UTC)"
            if previous
            else "no reference stored"
        )
        raise ReferenceRefused(
            f"camera {camera.id}: reference refused: {people} people detected in the sections "
            f"(at most {limit} allowed, cameras[{camera.id}].reference.max_people); capture the venue empty; {kept}"
        )
    return StoredReference(image, datetime.now(UTC), len(frames), people)


def seat_polygons(layout: Layout) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Every seat drawn as a polygon, in frame pixels, keyed by (section id, seat id)."""
    return layout.seat_polygons_px()


def reference_from_detections(
    frames: Sequence[np.ndarray], dets: Sequence[Detections], layout: Layout, min_frames: int = 3, cover: float = 0.3
) -> tuple[np.ndarray, set[tuple[str, str]]]:
    """An approximate reference where no empty frame exists (a camera installed after doors, a clip that
    starts full): per seat polygon, the per-pixel median of the frames in which no detection's anchor lies in
    the seat and no person box covers ``cover`` of it. Seats free in fewer than ``min_frames`` frames get no
    reference (returned set: the seats that have one). A person the detector misses in every frame ends up in
    the reference: this is weaker than a capture of the empty venue.
    """
    import shapely

    if len(frames) != len(dets) or not frames:
        raise ValueError("need one Detections per frame, and at least one frame")
    polys = seat_polygons(layout)
    keys = list(polys)
    shapes = [shapely.Polygon(polys[k]) for k in keys]
    free = np.zeros((len(frames), len(keys)), bool)
    for i, d in enumerate(dets):
        tallies = layout.count(d)
        boxes = shapely.box(d.xyxy[:, 0], d.xyxy[:, 1], d.xyxy[:, 2], d.xyxy[:, 3]) if len(d) else []
        for j, (key, shape) in enumerate(zip(keys, shapes, strict=True)):
            taken = key[1] in tallies.get(key[0], SectionTally(0, 0)).seats_taken
            covered = len(boxes) > 0 and bool(
                (shapely.area(shapely.intersection(boxes, shape)) >= cover * shape.area).any()
            )
            free[i, j] = not taken and not covered
    image = median_frame(list(frames))
    stack = np.stack(frames)
    valid: set[tuple[str, str]] = set()
    for j, key in enumerate(keys):
        idx = np.flatnonzero(free[:, j])
        if idx.size < min_frames:
            continue
        xs, ys = zip(*polys[key], strict=True)
        x0, y0 = max(int(min(xs)) - 2, 0), max(int(min(ys)) - 2, 0)
        x1, y1 = int(max(xs)) + 3, int(max(ys)) + 3
        image[y0:y1, x0:x1] = np.median(stack[idx, y0:y1, x0:x1], axis=0).astype(np.uint8)
        valid.add(key)
    return image, valid


class SeatFusion:
    """One camera's reference fused with its detections (see the module docstring)."""

    def __init__(
        self,
        camera: CameraConfig,
        layout: Layout,
        reference: np.ndarray,
        seats: Collection[tuple[str, str]] | None = None,
    ) -> None:
        """``seats``: only these (section, seat) keys have a usable reference (default: every seat polygon);
        the others stay detection-only."""
        cfg = camera.reference
        self.mode = cfg.mode
        self.cfg = cfg
        polys = seat_polygons(layout)
        if seats is not None:
            polys = {k: v for k, v in polys.items() if k in set(seats)}
        small = [k for k, v in polys.items() if cv2.contourArea(np.asarray(v, np.float32)) < MIN_SEAT_AREA]
        if small:  # too few pixels to compare: these seats stay detection-only
            log.info("camera %s: %d seat(s) under %d px stay detection-only", camera.id, len(small), MIN_SEAT_AREA)
            polys = {k: v for k, v in polys.items() if k not in set(small)}
        if not polys:
            raise ValueError(f"camera {camera.id}: no seat polygons to compare with the reference")
        w, h = layout.frame_size
        if reference.shape[1::-1] != (w, h):  # reference captured at another size: bring it to the zones' pixels
            reference = cv2.resize(reference, (w, h), interpolation=cv2.INTER_AREA)
        self.keys = list(polys)
        self._key_set = set(self.keys)
        params = ReferenceParams(similarity_min=cfg.similarity_min, edge_gain_min=cfg.edge_gain_min)
        self.reference = EmptyReference(reference, {f"{s}/{t}": p for (s, t), p in polys.items()}, params)
        self._last_hit = np.full(len(self.keys), np.nan)
        self.adapted = 0  # seat updates so far (metrics/logs)

    @classmethod
    def for_camera(cls, state_dir: Path, camera: CameraConfig, layout: Layout) -> SeatFusion | None:
        """The fusion for a camera with a stored reference and seat polygons; None otherwise."""
        if camera.reference.mode == "detection" or not layout.seat_polygons_px():
            return None
        stored = load_reference(state_dir, camera.id)
        if stored is None:
            return None
        try:
            return cls(camera, layout, stored.image)
        except ValueError as exc:
            log.warning("camera %s: reference not used: %s", camera.id, exc)
            return None

    def apply(self, image: np.ndarray, tallies: dict[str, SectionTally], now: float) -> dict[str, SectionTally]:
        """Seats taken per section after fusing the reference with the detections of one frame."""
        w, h = self.reference.size
        if image.shape[1::-1] != (w, h):  # frames scaled in the decoder
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        scores = self.reference.score(image)
        detected = np.array([sid in tallies.get(sec, SectionTally(0, 0)).seats_taken for sec, sid in self.keys])
        hit = self.fuse(scores.changed, detected)
        self._adapt(image, scores.similarity, hit | detected | scores.changed, scores.shift, now)
        taken: dict[str, set[str]] = {}
        for (sec, sid), on in zip(self.keys, hit, strict=True):
            if on:
                taken.setdefault(sec, set()).add(sid)
        out: dict[str, SectionTally] = {}
        for sec, tally in tallies.items():
            # seats without a polygon keep what the detections said
            keep = {s for s in tally.seats_taken if (sec, s) not in self._key_set}
            seats = frozenset(keep | taken.get(sec, set()))
            out[sec] = SectionTally(tally.people, len(seats), seats)
        return out

    def fuse(self, changed: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """Per-seat evidence of one frame, by `mode`."""
        if self.mode == "reference":
            return changed.copy()
        if self.mode == "detection":
            return detected.copy()
        return changed | detected

    def _adapt(self, image: np.ndarray, similarity: np.ndarray, evidence: np.ndarray, shift: tuple[float, float],
               now: float) -> None:
        cfg = self.cfg
        first = np.isnan(self._last_hit)
        self._last_hit[first] = now  # a seat must first be seen empty for adapt_after_s
        self._last_hit[evidence] = now
        if cfg.adapt_rate <= 0:
            return
        ready = (now - self._last_hit >= cfg.adapt_after_s) & (similarity >= cfg.adapt_similarity) & ~evidence
        if ready.any():
            self.adapted += self.reference.adapt(image, ready, cfg.adapt_rate, shift)


class AutoCapture:
    """Daily capture at ``reference.capture_at`` (device-local time): collects the analysed frames of the
    next ``capture_frames`` x ``capture_interval_s`` seconds, then stores the reference (or logs the refusal).
    Also watches the stored reference, so one captured by the command while the edge runs is loaded."""

    CHECK_S = 5.0

    def __init__(self, state_dir: Path, camera: CameraConfig) -> None:
        self.state_dir = Path(state_dir)
        self.camera = camera
        self._frames: list[np.ndarray] = []
        self._dets: list[Detections] = []
        self._last_at = 0.0
        self._done_for: str | None = None
        self._stamp = self._file_stamp()
        self._checked = 0.0

    def due(self, local_now: datetime) -> bool:
        at = self.camera.reference.capture_at
        if at is None:
            return False
        hh, mm = (int(x) for x in at.split(":"))
        start = local_now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        day = local_now.date().isoformat()
        return self._done_for != day and start <= local_now < start + timedelta(hours=1)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = reference_paths(self.state_dir, self.camera.id)[1].stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def stored_changed(self, now: float) -> bool:
        """True (once) when the stored reference changed on disk, e.g. by `turnout edge reference` while the edge
        runs; looked at every `CHECK_S` seconds."""
        if now - self._checked < self.CHECK_S:
            return False
        self._checked = now
        stamp = self._file_stamp()
        changed, self._stamp = stamp != self._stamp, stamp
        return changed

    def observe(self, image: np.ndarray, dets: Detections, size: tuple[int, int], now: float, local_now: datetime) -> bool:
        """Feed one analysed frame (``dets`` in the video's own pixels, ``size`` = its (w, h)); True when the
        stored reference changed (captured here, or by the command): the caller reloads it."""
        if self.stored_changed(now):
            return True
        if not self._frames and not self.due(local_now):
            return False
        cfg = self.camera.reference
        if self._frames and now - self._last_at < cfg.capture_interval_s:
            return False
        if image.shape[1::-1] != size:  # scaled in the decoder: the reference is kept at the video's pixels
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        self._frames.append(image.copy())
        self._dets.append(dets)
        self._last_at = now
        if len(self._frames) < cfg.capture_frames:
            return False
        frames, dets_seen = self._frames, iter(self._dets)
        self._frames, self._dets = [], []
        self._done_for = local_now.date().isoformat()
        previous = load_reference(self.state_dir, self.camera.id)

        def detect(img: np.ndarray) -> Detections:
            return next(dets_seen, Detections.empty())  # the frames' own detections; none on the median

        try:
            ref = capture(frames, detect, self.camera, previous)
        except ReferenceRefused as exc:
            log.error("%s", exc)
            return False
        save_reference(self.state_dir, self.camera.id, ref)
        self._stamp = self._file_stamp()
        log.info("camera %s: empty-seat reference captured at %s (%d frames)", self.camera.id, local_now, ref.frames)
        return True
