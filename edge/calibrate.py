"""Calibration against a manual count: search threshold x tile size x scale for the best-matching setting.

`search` runs the detector on a few frames of one camera for every setting of a small grid and scores each by
the mean absolute error between the people counted in the camera's sections and the operator's manual count
(a number, or head points clicked on a snapshot). Tile inferences are cached: each (mode, size, scale) is run
once at the lowest threshold and the higher thresholds are filtered from it (greedy NMS kept-sets are
threshold-monotone, so this equals running at each threshold). Settings are ranked by their error averaged
with the neighbouring thresholds, so the pick sits on a stable plateau rather than a knife edge that only
fits the sampled frames. The current setting is always scored too, and it is kept unless the pick is
strictly better on the frames.

The operator's frames are split (`split_frames`): the even-numbered ones *fit* the setting, the odd-numbered
ones *check* it. A pick that is better on the fit frames but worse than the current setting on the check
frames is refused (``CalibrationResult.refused``, with both figures): it only fits the frames it was chosen on.

`count_calibration` turns the chosen setting's per-frame counts into the camera's counting error as the MQTT
contract carries it (`CountCalibration`): ``bias`` = mean of count / true count over the frames, ``spread`` =
the sample standard deviation of that ratio (0 for a single frame).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.config import CameraConfig, DetectConfig
from edge.detections import Detections
from edge.detector import Detector
from edge.tiling import TileBoxes, merge_tiles, run_tiles
from edge.zones import Layout
from turnout.contract import CountCalibration, utcnow

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class SearchGrid:
    """The settings tried: every threshold with full-frame and with each tiled (size, scale)."""

    conf: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    scale: tuple[float, ...] = (2.0, 2.5, 3.0)
    size: tuple[int, ...] = (640,)
    include_full: bool = True


@dataclass(frozen=True, slots=True)
class Trial:
    """One row of the search table."""

    detect: DetectConfig
    error: float  # mean absolute error of the counted people vs the target
    mean_count: float
    recall: float | None  # share of head points matched to a counted person (point targets only)
    counts: tuple[int, ...] = ()  # people counted in the sections, per frame
    fit_error: float = 0.0  # mean absolute error on the fit frames (what the search ranks by)
    check_error: float = 0.0  # mean absolute error on the check frames (never used to rank)

    @property
    def label(self) -> str:
        d = self.detect
        if d.mode == "full":
            return f"full conf={d.conf:.2f}"
        return f"tiled size={d.tiles.size} scale={d.tiles.scale:g} conf={d.conf:.2f}"


@dataclass
class CalibrationResult:
    best: DetectConfig
    error_before: float
    error_after: float
    target: int
    table: list[Trial] = field(default_factory=list)
    recall_before: float | None = None
    recall_after: float | None = None
    counts_after: tuple[int, ...] = ()  # the chosen setting's count on each calibration frame
    fit_frames: int = 0
    check_frames: int = 0  # 0: a single frame, nothing held out
    proposed: Trial | None = None  # the search's pick on the fit frames, when it differs from the current setting
    current: Trial | None = None  # the current setting's row
    refused: bool = False  # the pick was better on the fit frames but worse on the check frames: not taken

    @property
    def improved(self) -> bool:
        return self.error_after < self.error_before

    def verdict(self) -> str:
        """One line on the fit/check split: the pick taken, refused, or no change, with both errors."""
        cur, new = self.current, self.proposed
        if cur is None:
            return ""
        if self.check_frames == 0:
            return "check: 1 frame only, nothing held out (sample more frames with --frames to check a change)"
        if new is None:
            return (
                f"check: current setting kept (MAE {cur.fit_error:.2f} on {self.fit_frames} fit frames, "
                f"{cur.check_error:.2f} on {self.check_frames} check frames)"
            )
        figures = (
            f"MAE on {self.fit_frames} fit frames {cur.fit_error:.2f} -> {new.fit_error:.2f}, "
            f"on {self.check_frames} check frames {cur.check_error:.2f} -> {new.check_error:.2f}"
        )
        if self.refused:
            return f"refused: {new.label} would worsen the error on the check frames ({figures}); setting unchanged"
        return f"check: {new.label} holds on the check frames ({figures})"

    def calibration(self, at: datetime | None = None) -> CountCalibration:
        """The chosen setting's counting error on the calibration frames (see `count_calibration`)."""
        return count_calibration(self.counts_after, self.target, at)


def count_calibration(counts: Sequence[int], target: int, at: datetime | None = None) -> CountCalibration:
    """Bias (mean of count / target) and spread (sample standard deviation of it) over the frames.

    Raises ``ValueError`` with the reason when it cannot be expressed: no frames, a true count of 0 (the ratio
    is undefined), or a bias outside what the contract accepts (0.2..5: the sections or the count are wrong).
    """
    if not counts:
        raise ValueError("no calibration frames")
    if target <= 0:
        raise ValueError("a manual count of 0 gives no count / true count ratio; calibrate with people present")
    ratios = np.asarray(counts, float) / float(target)
    bias = float(ratios.mean())
    spread = float(ratios.std(ddof=1)) if len(ratios) > 1 else 0.0
    at = at or utcnow().replace(microsecond=0)
    try:
        return CountCalibration(bias=round(bias, 4), spread=round(spread, 4), frames=len(ratios), at=at)
    except ValueError:
        raise ValueError(
            f"measured bias {bias:.3f} (spread {spread:.3f}) is outside 0.2..5: the camera counts "
            f"{ratios.mean() * target:.1f} people for a true {target}; check the sections and the manual count"
        ) from None


def load_points(path: str | Path) -> list[Point]:
    """Head points clicked on a snapshot: JSON ``[[x, y], ...]`` / ``[{"x":..,"y":..}]`` or CSV ``x,y`` rows."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read points file: {exc.strerror}") from None
    rows: list[Sequence[object]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("points", data)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of [x, y] points")
        rows = [(p.get("x"), p.get("y")) if isinstance(p, dict) else p for p in data]
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].strip().startswith("#")]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]  # header
    points: list[Point] = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, Sequence) or len(row) < 2 or not all(_is_number(v) for v in row[:2]):
            raise ValueError(f"{path}: point {i} is not an x,y pair of numbers: {row!r}")
        points.append((float(row[0]), float(row[1])))  # type: ignore[arg-type]
    return points


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def split_frames(n: int) -> tuple[list[int], list[int]]:
    """Indices of the fit frames (even) and check frames (odd) of ``n``; one frame is both, nothing is held out."""
    if n < 2:
        return list(range(n)), []
    return list(range(0, n, 2)), list(range(1, n, 2))


def counted(layout: Layout, dets: Detections) -> int:
    """People counted in the camera's sections in one frame (each section capped at its seats)."""
    return sum(t.occupied for t in layout.count(dets).values())


def point_recall(points: Sequence[Point], dets: Detections) -> float:
    """Share of head points that fall inside a distinct person box (greedy, nearest box top first)."""
    if not points:
        return 1.0
    if len(dets) == 0:
        return 0.0
    pts = np.asarray(points, float)
    box = dets.xyxy.astype(float)
    inside = (
        (pts[:, None, 0] >= box[None, :, 0])
        & (pts[:, None, 0] <= box[None, :, 2])
        & (pts[:, None, 1] >= box[None, :, 1])
        & (pts[:, None, 1] <= box[None, :, 3])
    )
    top = np.stack([(box[:, 0] + box[:, 2]) / 2, box[:, 1]], axis=1)
    dist = np.where(inside, np.linalg.norm(pts[:, None, :] - top[None, :, :], axis=2), np.inf)
    matched, used = 0, set()
    for p, b in zip(*np.unravel_index(np.argsort(dist, axis=None), dist.shape), strict=True):
        if not np.isfinite(dist[p, b]):
            break
        if b in used:
            continue
        used.add(int(b))
        matched += 1
        dist[p, :] = np.inf
    return matched / len(points)


class _Cache:
    """Per-frame raw detections at the lowest threshold, per (mode, size, scale)."""

    def __init__(self, detector: Detector, frames: list[np.ndarray], min_conf: float, base: DetectConfig) -> None:
        self.detector, self.frames, self.min_conf, self.base = detector, frames, min_conf, base
        self._store: dict[tuple[str, int, float, float], list[Detections | TileBoxes]] = {}

    def detections(self, cfg: DetectConfig) -> list[Detections]:
        key = (
            (cfg.mode, cfg.tiles.size, cfg.tiles.scale, cfg.tiles.overlap) if cfg.mode == "tiled" else ("full", 0, 0, 0)
        )
        if key not in self._store:
            low = cfg.model_copy(update={"conf": min(self.min_conf, cfg.conf)})
            if cfg.mode == "tiled":
                self._store[key] = [run_tiles(self.detector, f, low)[0] for f in self.frames]
            else:
                self._store[key] = [self.detector.detect(f, low) for f in self.frames]
        out: list[Detections] = []
        for raw in self._store[key]:
            if isinstance(raw, TileBoxes):
                keep = raw.scores >= cfg.conf
                sub = TileBoxes(raw.xyxy[keep], raw.scores[keep], raw.tile[keep], raw.truncated[keep])
                out.append(merge_tiles(sub, cfg.tiles, cfg.max_det * max(1, len(set(sub.tile.tolist())))))
            else:
                out.append(raw.with_min_confidence(cfg.conf)[: cfg.max_det])
        return out


def candidates(current: DetectConfig, grid: SearchGrid, detector: Detector) -> list[DetectConfig]:
    """The current setting first, then the grid (tile sizes other than the model input need a dynamic model)."""
    out = [current]
    sizes = grid.size if detector.dynamic else tuple(s for s in grid.size if s == detector.input_size[1])
    for conf in grid.conf:
        if grid.include_full:
            out.append(current.model_copy(update={"mode": "full", "conf": conf}))
        for size in sizes or (detector.input_size[1],):
            for scale in grid.scale:
                tiles = current.tiles.model_copy(update={"size": size, "scale": scale})
                out.append(current.model_copy(update={"mode": "tiled", "conf": conf, "tiles": tiles}))
    unique: dict[str, DetectConfig] = {}
    for cfg in out:
        unique.setdefault(cfg.model_dump_json(), cfg)
    return list(unique.values())


def search(
    detector: Detector,
    frames: list[np.ndarray],
    camera: CameraConfig,
    target: int | Sequence[Point],
    grid: SearchGrid = SearchGrid(),
) -> CalibrationResult:
    """Find the detection setting whose section count best matches ``target`` on ``frames``.

    ``target`` is the manual count, or head points (x, y in frame pixels) clicked on one of the frames:
    the count is then the number of points, and recall against the points is reported (on the first frame).
    """
    if not frames:
        raise ValueError("calibration needs at least one frame")
    points: list[Point] | None = None
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"manual count must be >= 0, got {target}")
        count = target
    else:
        points = [(float(x), float(y)) for x, y in target]
        count = len(points)
    h, w = frames[0].shape[:2]
    layout = Layout(camera, w, h)
    current = camera.detect
    cache = _Cache(detector, frames, min((*grid.conf, current.conf)), current)
    fit_idx, check_idx = split_frames(len(frames))
    table: list[Trial] = []
    for cfg in candidates(current, grid, detector):
        dets = cache.detections(cfg)
        counts = np.array([counted(layout, d) for d in dets], float)
        recall = point_recall(points, _in_sections(layout, dets[0])) if points is not None else None
        err = np.abs(counts - count)
        check_error = float(err[check_idx].mean()) if check_idx else float(err[fit_idx].mean())
        table.append(
            Trial(cfg, float(err.mean()), float(counts.mean()), recall, tuple(int(c) for c in counts),
                  float(err[fit_idx].mean()), check_error)
        )  # fmt: skip
    before = table[0]
    robust = _robust_errors(table)
    best = min(table, key=lambda t: (robust[id(t)], t.fit_error, -(t.recall or 0.0)))
    proposed = None if best.fit_error >= before.fit_error else best
    refused = proposed is not None and bool(check_idx) and proposed.check_error > before.check_error
    chosen = before if proposed is None or refused else proposed
    return CalibrationResult(
        best=chosen.detect,
        error_before=before.error,
        error_after=chosen.error,
        target=count,
        table=sorted(table, key=lambda t: t.fit_error),
        recall_before=before.recall,
        recall_after=chosen.recall,
        counts_after=chosen.counts,
        fit_frames=len(fit_idx),
        check_frames=len(check_idx),
        proposed=proposed,
        current=before,
        refused=refused,
    )


def _robust_errors(table: list[Trial]) -> dict[int, float]:
    """Each setting's error averaged with its neighbouring thresholds (same mode, size and scale).

    A setting that matches the count only on a knife edge (the next threshold up or down is far off) would
    not hold on other frames; ranking by this smoothed error prefers the middle of a stable plateau.
    """
    groups: dict[tuple, list[Trial]] = {}
    for t in table:
        d = t.detect
        key = (d.mode, d.tiles.size, d.tiles.scale, d.tiles.overlap) if d.mode == "tiled" else ("full",)
        groups.setdefault(key, []).append(t)
    out: dict[int, float] = {}
    for trials in groups.values():
        trials.sort(key=lambda t: t.detect.conf)
        for i, t in enumerate(trials):
            near = trials[max(0, i - 1) : i + 2]
            out[id(t)] = float(np.mean([n.fit_error for n in near]))
    return out


def _in_sections(layout: Layout, dets: Detections) -> Detections:
    return dets[layout.assign(dets) >= 0]


def format_table(result: CalibrationResult, limit: int = 10) -> str:
    """The best rows of the search as a plain-text table."""
    lines = [f"{'setting':<40} {'MAE':>6} {'check':>6} {'mean':>6} {'recall':>6}  (MAE: fit frames)"]
    for t in result.table[:limit]:
        recall = "" if t.recall is None else f"{t.recall:.2f}"
        check = f"{t.check_error:.2f}" if result.check_frames else "-"
        lines.append(f"{t.label:<40} {t.fit_error:>6.2f} {check:>6} {t.mean_count:>6.1f} {recall:>6}")
    return "\n".join(lines)


__all__ = [
    "CalibrationResult",
    "SearchGrid",
    "Trial",
    "count_calibration",
    "format_table",
    "load_points",
    "point_recall",
    "search",
    "split_frames",
]
