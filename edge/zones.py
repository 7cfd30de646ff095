"""Sections, seats and excluded areas drawn on a camera image, and per-section counting.

A person is *in* a section when the anchor point of their box (`CameraConfig.anchor`) lies inside the
section polygon and outside every excluded area. With a seat map, each person is assigned to the free
seat nearest their anchor (seat polygons contain the anchor; seat points must lie within 0.75 box
widths); without one, the section's occupied count is the number of people in it, capped at its seats.
`SectionSmoother` adds the hysteresis over recent analysis frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from edge.config import CameraConfig, Section
from edge.detections import Detections


@dataclass(frozen=True, slots=True)
class SectionTally:
    """What one frame shows in one section: people seen and which seats they sit in."""

    people: int
    occupied: int
    seats_taken: frozenset[str] = frozenset()


def _scale(points: list[tuple[float, float]], sx: float, sy: float) -> list[tuple[float, float]]:
    return [(x * sx, y * sy) for x, y in points]


@dataclass
class _SeatGeometry:
    ids: list[str]
    points: np.ndarray  # (S, 2) centre of each seat
    polygons: list[Polygon | None]


class Layout:
    """The zones of one camera in frame pixels, ready to count `Detections`."""

    def __init__(self, camera: CameraConfig, frame_w: int, frame_h: int) -> None:
        self.camera = camera
        self.frame_size = (frame_w, frame_h)
        sx, sy = (frame_w, frame_h) if camera.coordinates == "normalized" else (1.0, 1.0)
        self.sections: list[Section] = list(camera.sections)
        self._polys = [Polygon(_scale(s.polygon, sx, sy)) for s in self.sections]
        for sec, poly in zip(self.sections, self._polys, strict=True):
            if not poly.is_valid:
                raise ValueError(f"camera {camera.id}: section {sec.id} polygon crosses itself")
        self._exclude = [Polygon(_scale(a, sx, sy)) for a in camera.exclude]
        for p in (*self._polys, *self._exclude):
            shapely.prepare(p)
        self._regions: dict[tuple[int, int], BaseGeometry] = {}
        self._seats: list[_SeatGeometry | None] = []
        for sec in self.sections:
            if not sec.seat_map:
                self._seats.append(None)
                continue
            polys: list[Polygon | None] = []
            centres = []
            for seat in sec.seat_map:
                if seat.polygon is not None:
                    poly = Polygon(_scale(seat.polygon, sx, sy))
                    shapely.prepare(poly)
                    polys.append(poly)
                    centres.append((poly.centroid.x, poly.centroid.y))
                else:
                    assert seat.point is not None
                    polys.append(None)
                    centres.append((seat.point[0] * sx, seat.point[1] * sy))
            self._seats.append(_SeatGeometry([s.id for s in sec.seat_map], np.asarray(centres, float), polys))

    def region(self, image_w: int | None = None, image_h: int | None = None) -> BaseGeometry:
        """Where a counted person can be: the union of the sections minus the excluded areas (seats lie inside
        their section), in the pixels of an image of ``image_w`` x ``image_h`` (default: the frame size)."""
        key = (image_w or self.frame_size[0], image_h or self.frame_size[1])
        if key not in self._regions:
            area = shapely.union_all(self._polys)
            if self._exclude:
                area = area.difference(shapely.union_all(self._exclude))
            fx, fy = key[0] / self.frame_size[0], key[1] / self.frame_size[1]
            if (fx, fy) != (1.0, 1.0):  # frames scaled in the decoder
                area = affinity.scale(area, fx, fy, origin=(0, 0))
            shapely.prepare(area)
            self._regions[key] = area
        return self._regions[key]

    def polygons_px(self) -> dict[str, list[tuple[float, float]]]:
        """Section polygons in frame pixels (for drawing)."""
        return {s.id: list(p.exterior.coords) for s, p in zip(self.sections, self._polys, strict=True)}

    def exclude_px(self) -> list[list[tuple[float, float]]]:
        return [list(p.exterior.coords) for p in self._exclude]

    def seat_polygons_px(self) -> dict[tuple[str, str], list[tuple[float, float]]]:
        """Seats drawn as polygons, in frame pixels, keyed by (section id, seat id) (point seats left out)."""
        out: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for sec, geometry in zip(self.sections, self._seats, strict=True):
            if geometry is None:
                continue
            for sid, poly in zip(geometry.ids, geometry.polygons, strict=True):
                if poly is not None:
                    out[(sec.id, sid)] = list(poly.exterior.coords)[:-1]
        return out

    def seat_points_px(self) -> dict[str, np.ndarray]:
        return {s.id: g.points for s, g in zip(self.sections, self._seats, strict=True) if g is not None}

    def assign(self, dets: Detections) -> np.ndarray:
        """Index of the section each detection's anchor falls in, or -1 (outside or excluded)."""
        out = np.full(len(dets), -1, dtype=int)
        if len(dets) == 0:
            return out
        anchors = dets.anchors(self.camera.anchor)
        pts = shapely.points(anchors)
        excluded = np.zeros(len(dets), bool)
        for area in self._exclude:
            excluded |= shapely.contains(area, pts)
        for i, poly in enumerate(self._polys):
            inside = shapely.contains(poly, pts) & ~excluded & (out < 0)
            out[inside] = i
        return out

    def count(self, dets: Detections) -> dict[str, SectionTally]:
        """People and occupied seats per section in one frame (no smoothing)."""
        where = self.assign(dets)
        anchors = dets.anchors(self.camera.anchor) if len(dets) else np.zeros((0, 2))
        widths = dets.xyxy[:, 2] - dets.xyxy[:, 0] if len(dets) else np.zeros(0)
        result: dict[str, SectionTally] = {}
        for i, sec in enumerate(self.sections):
            members = np.flatnonzero(where == i)
            people = int(members.size)
            geometry = self._seats[i]
            if geometry is None:
                result[sec.id] = SectionTally(people, min(people, sec.seats))
                continue
            taken = self._match_seats(geometry, anchors[members], widths[members])
            result[sec.id] = SectionTally(people, len(taken), frozenset(taken))
        return result

    @staticmethod
    def _match_seats(geometry: _SeatGeometry, anchors: np.ndarray, widths: np.ndarray) -> set[str]:
        """Greedy nearest assignment of people to seats, closest pairs first, each seat used once."""
        if anchors.size == 0:
            return set()
        dist = np.linalg.norm(anchors[:, None, :] - geometry.points[None, :, :], axis=2)
        for j, poly in enumerate(geometry.polygons):
            if poly is not None:
                inside = shapely.contains(poly, shapely.points(anchors))
                dist[~inside, j] = np.inf
            else:
                dist[dist[:, j] > np.maximum(widths, 1.0) * 0.75, j] = np.inf
        taken: set[str] = set()
        used_people: set[int] = set()
        order = np.dstack(np.unravel_index(np.argsort(dist, axis=None), dist.shape))[0]
        for p, s in order:
            if not np.isfinite(dist[p, s]):
                break
            sid = geometry.ids[s]
            if p in used_people or sid in taken:
                continue
            taken.add(sid)
            used_people.add(int(p))
        return taken


@dataclass
class SectionSmoother:
    """Hysteresis over recent analysis frames so a briefly missed person does not flicker out.

    Section counts: the median of the last `window` frames (a miss in fewer than half of them is
    ignored; an emptied section reaches zero once more than half of the window is empty).
    Seats: a seat turns occupied after `seat_on` consecutive frames with someone in it and free after
    `seat_off` consecutive frames without.
    """

    window: int = 5
    seat_on: int = 2
    seat_off: int = 3
    _people: dict[str, deque[int]] = field(default_factory=dict)
    _occupied: dict[str, deque[int]] = field(default_factory=dict)
    _seat_state: dict[tuple[str, str], bool] = field(default_factory=dict)
    _seat_run: dict[tuple[str, str], int] = field(default_factory=dict)
    frames: int = 0

    @property
    def warm(self) -> bool:
        """True once enough frames were seen for the smoothed counts to mean something (publish gate)."""
        return self.frames >= max(self.window, self.seat_on)

    def update(self, tallies: dict[str, SectionTally], layout: Layout) -> dict[str, SectionTally]:
        self.frames += 1
        out: dict[str, SectionTally] = {}
        for sec in layout.sections:
            tally = tallies.get(sec.id, SectionTally(0, 0))
            people = self._push(self._people, sec.id, tally.people)
            if sec.seat_map:
                taken = self._update_seats(sec, tally.seats_taken)
                out[sec.id] = SectionTally(people, len(taken), frozenset(taken))
            else:
                occupied = self._push(self._occupied, sec.id, tally.occupied)
                out[sec.id] = SectionTally(people, min(occupied, sec.seats))
        return out

    def _push(self, store: dict[str, deque[int]], key: str, value: int) -> int:
        hist = store.setdefault(key, deque(maxlen=self.window))
        hist.append(value)
        return int(np.floor(np.median(hist) + 0.5))

    def _update_seats(self, sec: Section, seen: frozenset[str]) -> set[str]:
        taken: set[str] = set()
        for seat in sec.seat_map:
            key = (sec.id, seat.id)
            state = self._seat_state.get(key, False)
            hit = seat.id in seen
            run = self._seat_run.get(key, 0)
            run = run + 1 if hit != state else 0
            if (not state and run >= self.seat_on) or (state and run >= self.seat_off):
                state, run = not state, 0
            self._seat_state[key], self._seat_run[key] = state, run
            if state:
                taken.add(seat.id)
        return taken

    def reset(self) -> None:
        self.frames = 0
        self._people.clear()
        self._occupied.clear()
        self._seat_state.clear()
        self._seat_run.clear()
