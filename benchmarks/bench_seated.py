"""Detector path for seated people without a reference (issue 12, item 4): what each technique gains, at what cost.

Data (DEVELOPER sets only): dev_people_capston2 (109 labelled images, counts.csv: count error of all boxes)
and the classroom clip (every 20th frame, 14 seated students: people counted in the sections of
deploy/edge-classroom.yaml). Each image is run once per pass, at conf 0.10, and the variants are derived from
those passes (a higher threshold filters the boxes before the merge; greedy NMS kept-sets are
threshold-monotone, as in edge/calibrate.py):

* tiles s2 / s3: the seated default's tiles (size 640, overlap 0.25, scale 2) or finer ones (scale 3), tiles
  only (the whole-person pass and the merge's rule 5 switched off), as the edge did before issue 12;
* + whole: the whole-person pass of edge/fusion.py (a full-frame pass only on frames with a truncated box of
  half a tile or more; its people of that size are added and cover the fragments);
* + full: `full_frame: true` (every frame, every full-frame box);
* + flip: horizontal-flip test-time augmentation (the flipped frame's tiles, mirrored back, merged as more tiles);
* + flip wbf: the same two views merged each on its own, then fused by weighted boxes fusion (`fuse_views`:
  a person seen in one view only keeps half its score);
* + plausible: the merge's rule 5, the low-score shape filter of edge/fusion.py (other rows: switched off).
  "(new)": what the edge now does for the seated default's setting (whole-person pass + rule 5).

CPU ms = process CPU time (all threads) of the passes a variant needs, per frame, measured in this run.

    TURNOUT_SHARED=/work/shared TURNOUT_MODEL_DIR=/work/shared/models .venv/bin/python benchmarks/bench_seated.py
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import cv2
import numpy as np

import edge.tiling as tiling
from edge.config import DetectConfig, TileConfig, load_config
from edge.detections import Detections
from edge.detector import Detector
from edge.fusion import LARGE, has_large_fragment
from edge.tiling import FULL_FRAME, TileBoxes, merge_tiles, run_tiles
from edge.zones import Layout
from turnout.paths import REPO_ROOT, resolve_model, shared_dir

LOW = 0.10
FLIP = 1000  # tile-id offset of the flipped frame's tiles


@dataclass
class Passes:
    """One image's raw passes at LOW and their CPU ms."""

    full: Detections
    tiles: dict[str, TileBoxes]
    cpu: dict[str, float]


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.process_time()
    out = fn()
    return out, (time.process_time() - t0) * 1e3


def _tiles_only(det: Detector, img: np.ndarray, cfg: DetectConfig) -> TileBoxes:
    with mock.patch.object(tiling, "has_large_fragment", lambda *a: False):
        return run_tiles(det, img, cfg, conf=LOW)[0]


def run_passes(det: Detector, img: np.ndarray, base: DetectConfig, flip: bool) -> Passes:
    full_cfg = DetectConfig(mode="full", conf=LOW, iou=base.iou)
    full, cpu_full = _timed(lambda: det.detect(img, full_cfg))
    out = Passes(full, {}, {"full": cpu_full})  # type: ignore[arg-type]
    for name, scale in (("s2", 2.0), ("s3", 3.0)):
        cfg = base.model_copy(update={"tiles": base.tiles.model_copy(update={"scale": scale, "full_frame": False})})
        out.tiles[name], out.cpu[name] = _timed(lambda cfg=cfg: _tiles_only(det, img, cfg))  # type: ignore[assignment]
    if flip:
        cfg = base.model_copy(update={"tiles": base.tiles.model_copy(update={"scale": 2.0, "full_frame": False})})
        mirrored, out.cpu["s2flip"] = _timed(lambda: _tiles_only(det, np.ascontiguousarray(img[:, ::-1]), cfg))
        b: TileBoxes = mirrored  # type: ignore[assignment]
        xyxy = b.xyxy.copy()
        xyxy[:, [0, 2]] = img.shape[1] - b.xyxy[:, [2, 0]]
        out.tiles["s2flip"] = TileBoxes(xyxy, b.scores, b.tile + FLIP, b.truncated)
    return out


def _cat(*parts: TileBoxes) -> TileBoxes:
    return TileBoxes(
        np.concatenate([p.xyxy for p in parts]).reshape(-1, 4),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.tile for p in parts]),
        np.concatenate([p.truncated for p in parts]),
    )


def _full_as_tile(full: Detections, keep: np.ndarray | None = None) -> TileBoxes:
    d = full if keep is None else full[keep]
    return TileBoxes(d.xyxy, d.confidence, np.full(len(d), FULL_FRAME, np.int32), np.zeros(len(d), bool))


def fuse_views(a: Detections, b: Detections, iou: float = 0.55) -> Detections:
    """Weighted boxes fusion of two views (frame and its mirror): boxes matched by IoU (greedy, highest score
    first) are averaged weighted by score; the fused score is the mean over both views, a box seen in one view
    only keeps half its score (what `ensemble_boxes.weighted_boxes_fusion` does for two models)."""
    if len(a) == 0 or len(b) == 0:
        d = a if len(b) == 0 else b
        return Detections(d.xyxy, d.confidence / 2)
    lt = np.maximum(a.xyxy[:, None, :2], b.xyxy[None, :, :2])
    rb = np.minimum(a.xyxy[:, None, 2:], b.xyxy[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a = np.prod(a.xyxy[:, 2:] - a.xyxy[:, :2], axis=1)
    area_b = np.prod(b.xyxy[:, 2:] - b.xyxy[:, :2], axis=1)
    m = inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)
    boxes, scores, used_b = [], [], set()
    for i in np.argsort(-a.confidence):
        cand = [j for j in np.argsort(-m[i]) if m[i, j] >= iou and j not in used_b]
        if cand:
            j = cand[0]
            used_b.add(j)
            sa, sb = a.confidence[i], b.confidence[j]
            boxes.append((a.xyxy[i] * sa + b.xyxy[j] * sb) / (sa + sb))
            scores.append((sa + sb) / 2)
        else:
            boxes.append(a.xyxy[i])
            scores.append(a.confidence[i] / 2)
    for j in range(len(b)):
        if j not in used_b:
            boxes.append(b.xyxy[j])
            scores.append(b.confidence[j] / 2)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32))


def variant(p: Passes, name: str, conf: float, tiles: TileConfig) -> tuple[Detections, float]:
    """The variant's people at ``conf`` and the CPU ms of the passes it needs."""
    if name == "full 640":
        return p.full.with_min_confidence(conf), p.cpu["full"]
    if "wbf" in name:  # each view merged at LOW on its own, then fused; the fused score is thresholded
        one, cpu_one = variant(p, "tiles s2 + whole", LOW, tiles)
        mirror, cpu_m = variant(p, "tiles s2flip", LOW, tiles)
        t0 = time.process_time()
        fused = fuse_views(one, mirror).with_min_confidence(conf)
        return fused, cpu_one + cpu_m + (time.process_time() - t0) * 1e3
    scale = "s3" if "s3" in name else "s2flip" if "s2flip" in name else "s2"
    side = tiles.size / (3.0 if scale == "s3" else 2.0)
    parts, cpu = [p.tiles[scale]], p.cpu[scale]
    if "+ flip" in name:
        parts.append(p.tiles["s2flip"])
        cpu += p.cpu["s2flip"]
    boxes = _cat(*parts)
    boxes = TileBoxes(*(a[boxes.scores >= conf] for a in (boxes.xyxy, boxes.scores, boxes.tile, boxes.truncated)))
    if "+ full" in name:
        boxes, cpu = _cat(boxes, _full_as_tile(p.full.with_min_confidence(conf))), cpu + p.cpu["full"]
    elif "whole" in name and has_large_fragment(boxes.xyxy, boxes.truncated, side):
        full = p.full.with_min_confidence(conf)
        wh = full.xyxy[:, 2:] - full.xyxy[:, :2]
        boxes = _cat(boxes, _full_as_tile(full, wh.max(axis=1) >= LARGE * side))
        cpu += p.cpu["full"]
    t0 = time.process_time()
    merged = tiles.model_copy(update={"scale": 3.0 if scale == "s3" else 2.0})
    if "plausible" in name:
        dets = merge_tiles(boxes, merged, 10_000)  # the merge's rule 5 (edge/fusion.py `plausible`) on
    else:
        with mock.patch.object(tiling, "plausible", lambda d: d):  # the merge as it was before issue 12
            dets = merge_tiles(boxes, merged, 10_000)
    return dets, cpu + (time.process_time() - t0) * 1e3


VARIANTS = [
    ("full 640", (0.25,)),
    ("tiles s2 (seated default)", (0.1, 0.15, 0.2, 0.25)),
    ("tiles s2 + whole", (0.1, 0.15, 0.2, 0.25)),
    ("tiles s2 + whole + plausible (new)", (0.1, 0.15, 0.2, 0.25)),
    ("tiles s2 + full", (0.15, 0.2, 0.25)),
    ("tiles s2 + full + plausible", (0.1, 0.15, 0.2, 0.25)),
    ("tiles s2 + flip + whole", (0.15, 0.2, 0.25, 0.3)),
    ("tiles s2 + flip wbf + whole", (0.1, 0.15, 0.2)),
    ("tiles s3 + whole", (0.15, 0.2, 0.25)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=109, help="dev_people_capston2 images used (first N)")
    ap.add_argument("--frames", type=int, default=11, help="classroom frames (every 20th)")
    ap.add_argument("--no-flip", action="store_true", help="skip the flip pass (halves the run time)")
    args = ap.parse_args()
    shared = shared_dir()
    cam = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").camera("classroom")
    det = Detector(resolve_model("yolo11n-recon-dyn"), threads=2)
    base = cam.detect
    dev = shared / "data/dev_people_capston2"
    rows = list(csv.DictReader((dev / "counts.csv").open()))[: args.images]
    dev_passes, truth = [], []
    for r in rows:
        img = cv2.imread(str(dev / "images" / r["image"]))
        if img is None:
            raise SystemExit(f"cannot read {r['image']}")
        dev_passes.append(run_passes(det, img, base, not args.no_flip))
        truth.append(int(r["person_count"]))
    cap = cv2.VideoCapture(str(cam.source))
    room, i = [], 0
    while cap.grab() and len(room) < args.frames:
        if i % 20 == 0:
            room.append(cap.retrieve()[1])
        i += 1
    cap.release()
    layout = Layout(cam, room[0].shape[1], room[0].shape[0])
    room_passes = [run_passes(det, f, base, not args.no_flip) for f in room]
    gt = np.array(truth, float)
    print(f"dev_people_capston2: {len(rows)} images, {int(gt.sum())} people; classroom: {len(room)} frames x 14")
    head = (
        f"{'variant':<34} {'conf':>5} {'dev rel':>7} {'MAE':>5} {'bias':>6} {'ms/img':>7} {'room MAE':>8} {'ms/frm':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, confs in VARIANTS:
        if "flip" in name and args.no_flip:
            continue
        for conf in confs:
            dev_out = [variant(p, name, conf, base.tiles) for p in dev_passes]
            counts = np.array([len(d) for d, _ in dev_out], float)
            room_out = [variant(p, name, conf, base.tiles) for p in room_passes]
            seated = np.array([sum(t.occupied for t in layout.count(d).values()) for d, _ in room_out], float)
            print(
                f"{name:<34} {conf:>5.2f} {np.abs(counts - gt).sum() / gt.sum():>7.3f} "
                f"{np.abs(counts - gt).mean():>5.2f} {(counts - gt).mean():>+6.2f} "
                f"{np.mean([c for _, c in dev_out]):>7.0f} {np.abs(seated - 14).mean():>8.2f} "
                f"{np.mean([c for _, c in room_out]):>7.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
