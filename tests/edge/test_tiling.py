"""Tiled detection on real images: batching, border-aware merge, no double counting, no dropped neighbours."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import DetectConfig, TileConfig
from edge.detector import Detector, nms
from edge.tiling import merge_tiles, run_tiles, tile_windows


@pytest.fixture(scope="module")
def dyn(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)


@pytest.fixture(scope="module")
def static(model_path: Path) -> Detector:
    return Detector(model_path, threads=2)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def crowd_frame(shared: Path, index: int = 100) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared / "data/videos/crowd_topdown_1280x720.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


@pytest.mark.parametrize(("w", "h"), [(640, 352), (1280, 720), (480, 360), (100, 80)])
@pytest.mark.parametrize("tiles", [TileConfig(scale=2.0, overlap=0.25), TileConfig(scale=3.0, overlap=0.4)])
def test_windows_cover_the_frame_with_overlap(w: int, h: int, tiles: TileConfig) -> None:
    wins = tile_windows(w, h, tiles)
    cover = np.zeros((h, w), bool)
    side = tiles.size / tiles.scale
    for win in wins:
        assert 0 <= win.x0 < win.x1 <= w and 0 <= win.y0 < win.y1 <= h
        assert win.x1 - win.x0 == min(w, round(side)) or abs(win.x1 - win.x0 - side) <= 1
        cover[win.y0 : win.y1, win.x0 : win.x1] = True
    assert cover.all()
    xs = sorted({win.x0 for win in wins})
    if len(xs) > 1:  # neighbours share at least the configured overlap
        assert max(b - a for a, b in itertools.pairwise(xs)) <= side * (1 - tiles.overlap) + 1


def test_batched_equals_looped(shared: Path, dyn: Detector, static: Detector) -> None:
    """One ORT call with all tiles (dynamic batch) finds what the looped static model finds."""
    frame = crowd_frame(shared)
    cfg = DetectConfig(mode="tiled", conf=0.25, tiles=TileConfig(size=640, scale=1.0, overlap=0.2))
    a, b = dyn.detect(frame, cfg), static.detect(frame, cfg)
    assert dyn.last_timing["tiles"] == static.last_timing["tiles"] > 1
    assert abs(len(a) - len(b)) <= 1
    assert (iou(a.xyxy, b.xyxy).max(axis=1) > 0.9).mean() >= 0.9


def test_tiling_finds_more_of_a_crowd(shared: Path, dyn: Detector) -> None:
    """Crowd seen from high up (about 40 people): tiles at 2x find clearly more than the 640 pass."""
    frame = crowd_frame(shared)
    full = dyn.detect(frame, DetectConfig(conf=0.25))
    tiled = dyn.detect(frame, DetectConfig(mode="tiled", conf=0.25, tiles=TileConfig(scale=1.5, overlap=0.2)))
    assert len(tiled) >= len(full) + 5, (len(full), len(tiled))
    assert len(tiled) <= 50  # about 40 people: no blow-up from duplicates


def test_person_cut_by_a_tile_border_is_counted_once(shared: Path, dyn: Detector) -> None:
    """Choose tiles so that a border runs through a clearly detected person: still one box for them."""
    frame = crowd_frame(shared)
    people = dyn.detect(frame, DetectConfig(conf=0.5))
    assert len(people) >= 5
    h, w = frame.shape[:2]
    for scale in np.arange(1.0, 2.0, 0.05):
        tiles = TileConfig(size=640, scale=float(scale), overlap=0.2)
        wins = tile_windows(w, h, tiles)
        xs = {e for win in wins for e in (win.x0, win.x1) if 0 < e < w}
        ys = {e for win in wins for e in (win.y0, win.y1) if 0 < e < h}
        for box in people.xyxy:
            bw, bh = box[2] - box[0], box[3] - box[1]
            if any(box[0] + 0.35 * bw < e < box[2] - 0.35 * bw for e in xs) or any(
                box[1] + 0.35 * bh < e < box[3] - 0.35 * bh for e in ys
            ):
                person, cfg = box, DetectConfig(mode="tiled", conf=0.25, tiles=tiles)
                break
        else:
            continue
        break
    else:
        pytest.fail("no tile layout cuts a detected person")
    raw, _ = run_tiles(dyn, frame, cfg)
    near = iou(person[None], raw.xyxy)[0] > 0.1
    assert (near & raw.truncated).any(), "the constructed layout should cut the person in some tile"
    merged = merge_tiles(raw, cfg.tiles)
    hits = iou(person[None], merged.xyxy)[0]
    assert (hits > 0.4).sum() == 1, f"person {person} matched {np.sort(hits)[-3:]}"
    naive, _ = nms(raw.xyxy, raw.scores, 0.45, 300)
    assert len(merged) <= len(naive)


def yolo_boxes(label: Path, w: int, h: int) -> np.ndarray:
    rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
    xywh = np.array([[float(v) for v in r[1:5]] for r in rows if r[0] == "0"]).reshape(-1, 4)
    return np.stack(
        [
            (xywh[:, 0] - xywh[:, 2] / 2) * w,
            (xywh[:, 1] - xywh[:, 3] / 2) * h,
            (xywh[:, 0] + xywh[:, 2] / 2) * w,
            (xywh[:, 1] + xywh[:, 3] / 2) * h,
        ],
        axis=1,
    )


def test_merge_beats_plain_nms_on_real_photos(shared: Path, dyn: Detector) -> None:
    """On labelled real photos, the merge counts closer to the truth than plain NMS over tiles, with fewer
    duplicate boxes on one labelled person, and keeps neighbours (recall not below the full-frame pass)."""
    root = shared / "data/dev_people_capston2"
    rows = list(csv.DictReader((root / "counts.csv").open()))[::5]
    cfg = DetectConfig(mode="tiled", conf=0.25, tiles=TileConfig(size=640, scale=2.0, overlap=0.2, full_frame=True))
    err = {"merge": [], "naive": []}
    dups = {"merge": 0, "naive": 0}
    found = {"merge": 0, "full": 0}
    for row in rows:
        img = cv2.imread(str(root / "images" / row["image"]))
        truth = yolo_boxes(root / "labels" / (Path(row["image"]).stem + ".txt"), img.shape[1], img.shape[0])
        raw, _ = run_tiles(dyn, img, cfg)
        boxes = {
            "merge": merge_tiles(raw, cfg.tiles).xyxy,
            "naive": nms(raw.xyxy, raw.scores, 0.45, 300)[0],
            "full": dyn.detect(img, DetectConfig(conf=0.25)).xyxy,
        }
        for key in ("merge", "naive"):
            err[key].append(abs(len(boxes[key]) - int(row["person_count"])))
            if len(boxes[key]) and len(truth):
                dups[key] += int(((iou(truth, boxes[key]) > 0.5).sum(axis=1) > 1).sum())
        for key in ("merge", "full"):
            if len(boxes[key]) and len(truth):
                found[key] += int((iou(truth, boxes[key]).max(axis=1) > 0.5).sum())
    assert np.mean(err["merge"]) < np.mean(err["naive"]), err
    assert dups["merge"] <= dups["naive"], dups
    assert found["merge"] >= found["full"], found
