"""High-resolution tiled detection for wide shots and seated audiences with small, half-hidden heads.

The frame is (virtually) upscaled by ``scale`` and cut into overlapping ``size`` x ``size`` tiles: each tile is a
``size / scale`` pixel square of the source frame, resized to the model input. With a dynamic-batch model all
tiles (and the optional full-frame pass) go through the runtime in calls of at most ``model.max_batch``
images (memory stays bounded however many tiles a frame has); a fixed-batch model loops over them.
Tiles that lie farther than ``roi_margin`` tile sides from every section are not run (``needed_windows``), and a
camera's `TileGate` (edge/gating.py) lets tiles that barely changed reuse their last detections.

With ``full_frame`` off, a frame where a tile cut box spans half a tile side or more (a person larger than a
tile, seen in parts) gets one full-frame pass for its whole people (edge/fusion.py `whole_people`), so rule 1
below drops the fragments; seated cameras, whose people are smaller, never pay for it.

Merging (``merge_tiles``) must neither double-count a person cut by a tile border nor drop close neighbours:

1. A box that touches an *inner* tile edge (not the image border) is *truncated*: the tile saw only part of
   the person. It is dropped when a box from another tile (or the full-frame pass) that is not truncated
   covers most of it (intersection over the fragment's area >= ``merge_ios``): that tile saw the person whole.
2. Boxes from *different* tiles are duplicates when their IoU >= ``merge_iou``, or when one of them is
   truncated and their intersection over the smaller box >= ``merge_ios`` (a fragment and its whole).
   The higher-scoring box is kept; two truncated fragments of one person are joined into their union.
3. Boxes from the *same* tile were already separated by the model's NMS and are not merged by IoU again, so
   two neighbours seated shoulder to shoulder both survive (plain NMS over all tiles would either merge them
   at a low IoU or keep fragments at a high one).
4. The one exception, in any tile: a box nested in another (intersection over the smaller >= 0.85) whose top
   edge is level with the other's is the same person boxed twice (upper body and whole body, a pattern of
   upscaled seated people); distinct people never share their head this way.
5. Low-score boxes (< 0.25) shaped like clutter are dropped (edge/fusion.py `plausible`): thin poles (desk
   and chair legs), flat desk edges, and boxes far shorter than the frame's confident people (bins, bags).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from edge.config import DetectConfig, TileConfig
from edge.detections import Detections
from edge.detector import Detector, letterbox
from edge.fusion import has_large_fragment, plausible, whole_people
from edge.gating import TileGate, TileResult, thumbnail

FULL_FRAME = -1  # tile index of the full-frame pass
NESTED_IOS = 0.85  # a box this much inside another with the same top edge is the same person


@dataclass(frozen=True, slots=True)
class Window:
    """One tile: a source-frame rectangle ``[x0, x1) x [y0, y1)`` in integer pixels."""

    x0: int
    y0: int
    x1: int
    y1: int


def tile_windows(width: int, height: int, tiles: TileConfig) -> list[Window]:
    """Overlapping square windows covering the frame, evenly spread, each ``tiles.size / tiles.scale`` wide."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    side = tiles.size / tiles.scale

    def starts(length: int) -> list[tuple[int, int]]:
        if length <= side:
            return [(0, length)]
        step = side * (1 - tiles.overlap)
        n = math.ceil((length - side) / step - 1e-9) + 1
        return [(round(s), round(s + side)) for s in np.linspace(0, length - side, n)]

    return [Window(x0, y0, x1, y1) for y0, y1 in starts(height) for x0, x1 in starts(width)]


def _tile_input(det: Detector, tiles: TileConfig) -> tuple[int, int]:
    """Model input (h, w) of one tile: ``size`` rounded up to the stride for dynamic models."""
    if not det.dynamic:
        return det.input_size
    side = math.ceil(tiles.size / det.stride) * det.stride
    return side, side


@dataclass
class TileBoxes:
    """All per-tile detections before merging, in source pixels."""

    xyxy: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    tile: np.ndarray  # (N,) window index, FULL_FRAME for the full-frame pass
    truncated: np.ndarray  # (N,) bool: touches an inner tile edge


def needed_windows(windows: list[Window], roi: BaseGeometry | None, tiles: TileConfig) -> list[Window]:
    """The windows within ``tiles.roi_margin`` tile sides of ``roi`` (all of them without a region)."""
    if roi is None or not tiles.roi:
        return windows
    rects = shapely.box(*np.array([[w.x0, w.y0, w.x1, w.y1] for w in windows], float).T)
    margin = tiles.roi_margin * tiles.size / tiles.scale
    near = shapely.dwithin(rects, roi, margin) if margin > 0 else shapely.intersects(rects, roi)
    return [w for w, keep in zip(windows, near, strict=True) if keep]


def empty_boxes() -> TileBoxes:
    return TileBoxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, bool))


def batches(n: int, max_batch: int | None) -> list[range]:
    """Split ``n`` images into the fewest calls of at most ``max_batch``, sizes as even as possible."""
    if n == 0:
        return []
    calls = 1 if max_batch is None else math.ceil(n / max_batch)
    bounds = np.linspace(0, n, calls + 1).round().astype(int)
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def run_tiles(
    det: Detector,
    frame: np.ndarray,
    cfg: DetectConfig,
    conf: float | None = None,
    roi: BaseGeometry | None = None,
    gate: TileGate | None = None,
    now: float = 0.0,
) -> tuple[TileBoxes, dict[str, float]]:
    """Detect in every tile at ``conf`` (default ``cfg.conf``), in calls of at most ``det.max_batch`` tiles.

    With a region ``roi`` (frame pixels; the camera's sections) and ``tiles.roi`` on, tiles farther than
    ``tiles.roi_margin`` tile sides from it are not run (``tiles_skipped`` in the timing): no person counted
    in a section can come from them alone. With a ``gate``, tiles whose pixels barely changed since their last
    inference reuse its boxes (``tiles_reused``). Each call's output is decoded before the next call, and the
    input buffer is reused, so memory does not grow with the number of tiles.
    """
    conf = cfg.conf if conf is None else conf
    t0 = time.perf_counter()
    h, w = frame.shape[:2]
    all_windows = tile_windows(w, h, cfg.tiles)
    windows = needed_windows(all_windows, roi, cfg.tiles)
    skipped = len(all_windows) - len(windows)
    jobs: list[tuple[int, Window]] = list(enumerate(windows))
    if cfg.tiles.full_frame:
        jobs.append((FULL_FRAME, Window(0, 0, w, h)))
    results: dict[int, TileResult] = {}
    todo: list[tuple[int, Window, np.ndarray | None]] = []
    for tile_id, win in jobs:
        thumb = None
        if gate is not None:
            thumb = thumbnail(frame[win.y0 : win.y1, win.x0 : win.x1])
            kept = gate.reuse((win.x0, win.y0, win.x1, win.y1), thumb, now, conf, (w, h))
            if kept is not None:
                results[tile_id] = kept
                continue
        todo.append((tile_id, win, thumb))
    shape = _tile_input(det, cfg.tiles)
    margin = max(2.0, 0.01 * cfg.tiles.size / cfg.tiles.scale)
    t_pre = t_inf = 0.0
    t_post = time.perf_counter() - t0
    for part in batches(len(todo), det.max_batch):
        t1 = time.perf_counter()
        images, boxes = [], []
        for i in part:
            img, lb = letterbox(frame[todo[i][1].y0 : todo[i][1].y1, todo[i][1].x0 : todo[i][1].x1], shape)
            images.append(img)
            boxes.append(lb)
        blob = det.blob(images)
        t2 = time.perf_counter()
        out = det.infer(blob)
        t3 = time.perf_counter()
        for j, i in enumerate(part):
            tile_id, win, thumb = todo[i]
            xyxy, scores = det.decode(out[j], conf, cfg.iou, cfg.max_det)
            xyxy = boxes[j].to_source(xyxy, win.x1 - win.x0, win.y1 - win.y0)
            xyxy += np.array([win.x0, win.y0, win.x0, win.y0], np.float32)
            if tile_id == FULL_FRAME:
                trunc = np.zeros(len(xyxy), bool)
            else:
                trunc = (
                    ((xyxy[:, 0] <= win.x0 + margin) & (win.x0 > 0))
                    | ((xyxy[:, 1] <= win.y0 + margin) & (win.y0 > 0))
                    | ((xyxy[:, 2] >= win.x1 - margin) & (win.x1 < w))
                    | ((xyxy[:, 3] >= win.y1 - margin) & (win.y1 < h))
                )
            results[tile_id] = TileResult(xyxy, scores, trunc)
            if gate is not None and thumb is not None:
                gate.store((win.x0, win.y0, win.x1, win.y1), thumb, results[tile_id], now, conf)
        del out
        t_pre += t2 - t1
        t_inf += t3 - t2
        t_post += time.perf_counter() - t3
    timing = {
        "preprocess": t_pre * 1e3,
        "inference": t_inf * 1e3,
        "postprocess": t_post * 1e3,
        "tiles": len(todo),
        "tiles_skipped": skipped,
        "tiles_reused": len(jobs) - len(todo),
        "calls": len(batches(len(todo), det.max_batch)),
    }
    if not cfg.tiles.full_frame and any(
        has_large_fragment(r.xyxy, r.truncated, cfg.tiles.size / cfg.tiles.scale) for r in results.values()
    ):  # a person larger than a tile, seen in parts: one full-frame pass for the whole people (edge/fusion.py)
        t1 = time.perf_counter()
        whole = whole_people(det, frame, cfg, conf, cfg.tiles.size / cfg.tiles.scale)
        results[FULL_FRAME] = TileResult(whole.xyxy, whole.confidence, np.zeros(len(whole), bool))
        jobs.append((FULL_FRAME, Window(0, 0, w, h)))
        t_inf += time.perf_counter() - t1
    timing["inference"] = t_inf * 1e3
    if not results:  # no section near any tile: nothing to run
        return empty_boxes(), timing
    order = [tile_id for tile_id, _ in jobs]
    boxes_all = TileBoxes(
        np.concatenate([results[t].xyxy for t in order]).reshape(-1, 4).astype(np.float32),
        np.concatenate([results[t].scores for t in order]).astype(np.float32),
        np.concatenate([np.full(len(results[t].scores), t, np.int32) for t in order]),
        np.concatenate([results[t].truncated for t in order]).astype(bool),
    )
    return boxes_all, timing


def _overlaps(xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise intersection areas (N, N) and box areas (N,)."""
    lt = np.maximum(xyxy[:, None, :2], xyxy[None, :, :2])
    rb = np.minimum(xyxy[:, None, 2:], xyxy[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area = np.prod((xyxy[:, 2:] - xyxy[:, :2]).clip(1e-6), axis=1)
    return inter, area


def merge_tiles(boxes: TileBoxes, tiles: TileConfig, max_det: int = 300) -> Detections:
    """Merge per-tile boxes into one set of people (see the module docstring for the rules)."""
    n = len(boxes.scores)
    if n == 0:
        return Detections.empty()
    xyxy = boxes.xyxy.astype(np.float32, copy=True)
    inter, area = _overlaps(xyxy)
    iou = inter / (area[:, None] + area[None, :] - inter)
    ios = inter / np.minimum(area[:, None], area[None, :])
    other_tile = boxes.tile[:, None] != boxes.tile[None, :]
    # rule 1: a fragment [i] covered by a whole box [j] from another tile
    covers = (inter / area[:, None] >= tiles.merge_ios) & other_tile & ~boxes.truncated[None, :]
    alive = ~(boxes.truncated & covers.any(axis=1))
    # rule 2: duplicates across tiles
    either_trunc = boxes.truncated[:, None] | boxes.truncated[None, :]
    dup = other_tile & ((iou >= tiles.merge_iou) | ((ios >= tiles.merge_ios) & either_trunc))
    # rule 4: one person boxed twice (upper body and whole body): nested, same head, any tile
    height = (xyxy[:, 3] - xyxy[:, 1]).clip(1e-6)
    same_top = np.abs(xyxy[:, None, 1] - xyxy[None, :, 1]) <= 0.25 * np.minimum(height[:, None], height[None, :])
    dup |= (ios >= NESTED_IOS) & same_top
    order = np.argsort(-boxes.scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        victims = dup[i] & alive
        victims[i] = False
        both_fragments = victims & boxes.truncated & boxes.truncated[i]
        if both_fragments.any():  # one person cut in two: keep the union
            xyxy[i, :2] = np.minimum(xyxy[i, :2], xyxy[both_fragments, :2].min(axis=0))
            xyxy[i, 2:] = np.maximum(xyxy[i, 2:], xyxy[both_fragments, 2:].max(axis=0))
        alive &= ~victims
    idx = np.asarray(keep[:max_det], np.int64)
    return plausible(Detections(xyxy[idx], boxes.scores[idx].astype(np.float32)))  # rule 5


def detect_tiled(
    det: Detector,
    frame: np.ndarray,
    cfg: DetectConfig,
    roi: BaseGeometry | None = None,
    gate: TileGate | None = None,
    now: float = 0.0,
) -> tuple[Detections, dict[str, float]]:
    """Tiled detection of one frame: batched inference of the needed tiles, then the border-aware merge."""
    boxes, timing = run_tiles(det, frame, cfg, roi=roi, gate=gate, now=now)
    t0 = time.perf_counter()
    # max_det bounds each tile (as in Ultralytics, per image); the merged frame may hold more people
    used = int(timing.get("tiles", 1) + timing.get("tiles_reused", 0))
    dets = merge_tiles(boxes, cfg.tiles, cfg.max_det * max(1, used))
    timing["postprocess"] += (time.perf_counter() - t0) * 1e3
    return dets, timing
