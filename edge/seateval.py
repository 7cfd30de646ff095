"""Labelled seat data for measuring the empty-seat reference (benchmarks/bench_reference.py and tests).

* PKLot (camera UFPR05 subset in ``$TURNOUT_SHARED/data/pklot_ufpr05_subset``): 40 parking spaces with a
  4-point contour and an occupied flag per labelled frame; empty-lot background frames of other days.
* Seat labels of our own (tests/data/seats/*.json): seat polygons of a video and the occupied seats at
  sampled frame numbers.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.config import Anchor, CameraConfig, DetectConfig, ReferenceConfig, Seat, Section
from edge.detections import Detections
from edge.reference import EmptyReference, ReferenceParams, median_frame, raw_difference
from edge.seatref import SeatFusion, reference_from_detections
from edge.zones import Layout, SectionSmoother

Polygon = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class LabelledFrame:
    path: Path
    day: str  # YYYY-MM-DD
    sequence: int
    occupied: np.ndarray  # (S,) bool, in the order of `PKLot.seats`


@dataclass(frozen=True, slots=True)
class PKLot:
    root: Path
    seats: dict[str, Polygon]
    frames: list[LabelledFrame]

    def backgrounds(self, day: str) -> list[Path]:
        """Empty-lot frames of one day (YYYY-MM-DD)."""
        return sorted((self.root / "backgrounds").glob(f"{day}_*.jpg"))

    def background_days(self) -> list[str]:
        return sorted({p.name[:10] for p in (self.root / "backgrounds").glob("*.jpg")})

    def reference_image(self, day: str) -> np.ndarray:
        paths = self.backgrounds(day)
        if not paths:
            raise FileNotFoundError(f"no background frames of {day} in {self.root / 'backgrounds'}")
        return median_frame([read_image(p) for p in paths])


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


def _spaces(xml: Path) -> list[tuple[str, Polygon, bool]]:
    out = []
    for space in ET.parse(xml).getroot().findall("space"):
        contour = space.find("contour")
        if contour is None:
            raise ValueError(f"{xml}: space {space.get('id')} has no contour")
        pts = [(float(p.get("x", "nan")), float(p.get("y", "nan"))) for p in contour.findall("point")]
        out.append((str(space.get("id")), pts, space.get("occupied") == "1"))
    return out


def load_pklot(root: Path) -> PKLot:
    """Every labelled frame of the subset (sequence*/labels/*.xml beside sequence*/frames/*.jpg)."""
    frames: list[LabelledFrame] = []
    seats: dict[str, Polygon] = {}
    for xml in sorted(root.glob("sequence*/labels/*.xml")):
        spaces = _spaces(xml)
        if not seats:
            seats = {sid: poly for sid, poly, _ in spaces}
        elif [s for s, _, _ in spaces] != list(seats):
            raise ValueError(f"{xml}: spaces differ from the first label file")
        jpg = xml.parent.parent / "frames" / f"{xml.stem}.jpg"
        seq = int(xml.parent.parent.name.removeprefix("sequence"))
        frames.append(LabelledFrame(jpg, xml.stem[:10], seq, np.array([o for _, _, o in spaces])))
    if not frames:
        raise FileNotFoundError(f"no PKLot labels under {root}")
    return PKLot(root, seats, frames)


@dataclass(frozen=True, slots=True)
class FrameResult:
    frame: LabelledFrame
    predicted: np.ndarray  # (S,) bool

    @property
    def correct(self) -> int:
        return int((self.predicted == self.frame.occupied).sum())

    @property
    def count_error(self) -> int:
        return int(self.predicted.sum()) - int(self.frame.occupied.sum())


def score_pklot(
    lot: PKLot, reference_day: str, params: ReferenceParams | None = None, adapt_rate: float = 0.0
) -> list[FrameResult]:
    """The reference method on every labelled frame not of ``reference_day``; with ``adapt_rate`` > 0 the
    reference follows each day's frames in time order (seats judged empty and >= 0.7 similar blend in)."""
    ref_image = lot.reference_image(reference_day)
    results = []
    by_day: dict[str, list[LabelledFrame]] = {}
    for f in lot.frames:
        if f.day != reference_day:
            by_day.setdefault(f.day, []).append(f)
    for frames in by_day.values():
        ref = EmptyReference(ref_image, lot.seats, params)  # each day starts from the stored reference
        for f in sorted(frames, key=lambda x: x.path.name):
            image = read_image(f.path)
            scores = ref.score(image)
            results.append(FrameResult(f, scores.changed))
            if adapt_rate > 0:
                ref.adapt(image, ~scores.changed & (scores.similarity >= 0.7), adapt_rate, scores.shift)
    return results


def score_pklot_raw(lot: PKLot, reference_day: str, threshold: float) -> list[FrameResult]:
    """Naive baseline: mean |grey - reference grey| per space above ``threshold``, no registration or
    lighting normalisation."""
    ref_image = lot.reference_image(reference_day)
    out = []
    for f in lot.frames:
        if f.day != reference_day:
            out.append(FrameResult(f, raw_difference(read_image(f.path), ref_image, lot.seats) > threshold))
    return out


def accuracy(results: list[FrameResult]) -> float:
    total = sum(r.frame.occupied.size for r in results)
    return sum(r.correct for r in results) / total


# ------------------------------------------------------------------------------------------- own labels
@dataclass(frozen=True, slots=True)
class SeatLabels:
    video: str  # relative to $TURNOUT_SHARED/data
    size: tuple[int, int]
    seats: dict[str, Polygon]
    occupied: dict[int, frozenset[str]]  # frame number -> occupied seat ids


def load_seat_labels(path: Path) -> SeatLabels:
    """tests/data/seats/*.json: ``video``, ``size`` [w, h], ``seats`` [{id, polygon}], ``occupied``
    {frame: [ids]}."""
    doc = json.loads(Path(path).read_text())
    seats = {s["id"]: [tuple(map(float, p)) for p in s["polygon"]] for s in doc["seats"]}
    if len(seats) != len(doc["seats"]):
        raise ValueError(f"{path}: duplicate seat ids")
    occupied = {int(k): frozenset(v) for k, v in doc["occupied"].items()}
    unknown = {sid for ids in occupied.values() for sid in ids} - set(seats)
    if unknown:
        raise ValueError(f"{path}: occupied seats not in `seats`: {sorted(unknown)}")
    return SeatLabels(doc["video"], (int(doc["size"][0]), int(doc["size"][1])), seats, occupied)


def read_frames(video: Path, numbers: list[int]) -> dict[int, np.ndarray]:
    """The given frame numbers of a video, decoded in order."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    wanted, out, i = set(numbers), {}, 0
    try:
        while wanted - set(out) and cap.grab():
            if i in wanted:
                ok, img = cap.retrieve()
                if ok:
                    out[i] = img
            i += 1
    finally:
        cap.release()
    return out


@dataclass(frozen=True, slots=True)
class ClipResult:
    mode: str
    correct: int
    total: int
    seats_with_reference: int
    seats: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def clip_camera(labels: SeatLabels, detect: DetectConfig, anchor: Anchor, mode: str) -> CameraConfig:
    """A camera whose one section is the whole frame, with the labelled seats as seat polygons."""
    w, h = labels.size
    seat_map = [Seat(id=sid, polygon=[(min(max(x, 0.0), w), min(max(y, 0.0), h)) for x, y in poly])
                for sid, poly in labels.seats.items()]
    section = Section(id="all", seats=len(seat_map), polygon=[(0, 0), (w, 0), (w, h), (0, h)], seat_map=seat_map)
    return CameraConfig(
        id="clip",
        source="clip",
        anchor=anchor,
        detect=detect,
        sections=[section],
        reference=ReferenceConfig(mode=mode, adapt_rate=0.0),  # type: ignore[arg-type]
    )


def evaluate_clip(
    labels: SeatLabels,
    frames: dict[int, np.ndarray],
    dets: dict[int, Detections],
    detect: DetectConfig,
    anchor: Anchor,
    reference_until: int,
    hysteresis: tuple[int, int] = (2, 3),
) -> list[ClipResult]:
    """Per-seat accuracy on the labelled frames after ``reference_until`` for detection only, reference only and
    both. The reference is approximated from the frames up to ``reference_until`` (no empty frame in these
    clips): `reference_from_detections`. Seat states pass through the camera's hysteresis from the first frame.
    """
    order = sorted(labels.occupied)
    before = [i for i in order if i <= reference_until]
    after = [i for i in order if i > reference_until]
    results = []
    for mode in ("detection", "reference", "both"):
        camera = clip_camera(labels, detect, anchor, mode)
        layout = Layout(camera, *labels.size)
        image, valid = reference_from_detections([frames[i] for i in before], [dets[i] for i in before], layout)
        fusion = SeatFusion(camera, layout, image, seats=valid) if valid else None
        smoother = SectionSmoother(window=1, seat_on=hysteresis[0], seat_off=hysteresis[1])
        correct = total = 0
        for i in order:
            tallies = layout.count(dets[i])
            if fusion is not None:
                tallies = fusion.apply(frames[i], tallies, float(i))
            taken = smoother.update(tallies, layout)["all"].seats_taken
            if i in after:
                truth = labels.occupied[i]
                correct += sum((sid in taken) == (sid in truth) for sid in labels.seats)
                total += len(labels.seats)
        results.append(ClipResult(mode, correct, total, len(valid), len(labels.seats)))
    return results
