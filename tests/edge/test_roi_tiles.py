"""Only the pixels that matter: tiles far from every section are not run, and section counts do not change."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely.geometry import box

from edge.config import CameraConfig, EdgeConfig, load_config
from edge.detector import Detector
from edge.metrics import EdgeCollector
from edge.pipeline import CameraWorker
from edge.sources import Frame
from edge.tiling import needed_windows, tile_windows
from edge.zones import Layout

REPO = Path(__file__).parents[2]
FRAMES = (20, 100, 180)


@pytest.fixture(scope="module")
def classroom() -> EdgeConfig:
    return load_config(REPO / "deploy/edge-classroom.yaml")


@pytest.fixture(scope="module")
def left_only(classroom: EdgeConfig) -> CameraConfig:
    """The shipped seated camera with only its left desk column (sections cover part of the frame)."""
    cam = classroom.camera("classroom")
    return cam.model_copy(update={"sections": [s for s in cam.sections if s.id.startswith("left-")]})


@pytest.fixture(scope="module")
def frames(left_only: CameraConfig) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(left_only.source))
    out = []
    for i in FRAMES:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        assert ok
        out.append(frame)
    cap.release()
    return out


@pytest.fixture(scope="module")
def detector(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)


def test_partial_sections_run_fewer_tiles_same_counts(
    detector: Detector, left_only: CameraConfig, frames: list[np.ndarray]
) -> None:
    h, w = frames[0].shape[:2]
    layout = Layout(left_only, w, h)
    seen = 0
    for frame in frames:
        everything = layout.count(detector.detect(frame, left_only.detect))
        assert detector.last_timing["tiles"] == 6 and "tiles_skipped" in detector.last_timing
        only_needed = layout.count(detector.detect(frame, left_only.detect, roi=layout.region()))
        assert detector.last_timing["tiles"] == 4
        assert detector.last_timing["tiles_skipped"] == 2
        assert only_needed == everything
        seen += sum(t.people for t in everything.values())
    assert seen >= 3 * len(frames)  # students are seated in the left column: the comparison is not 0 == 0


def test_roi_windows_follow_the_sections_and_the_switch(left_only: CameraConfig) -> None:
    tiles = left_only.detect.tiles
    windows = tile_windows(640, 352, tiles)
    assert len(windows) == 6
    layout = Layout(left_only, 640, 352)
    kept = needed_windows(windows, layout.region(), tiles)
    assert all(win.x0 < 320 for win in kept) and len(kept) == 4
    assert needed_windows(windows, layout.region(), tiles.model_copy(update={"roi": False})) == windows
    corner = box(600, 330, 630, 345)  # a section in the bottom-right corner only
    assert [(win.x0, win.y0) for win in needed_windows(windows, corner, tiles)] == [(320, 0), (320, 32)]
    far = tiles.model_copy(update={"roi_margin": 0.0})
    assert [(win.x0, win.y0) for win in needed_windows(windows, corner, far)] == [(320, 32)]
    assert len(needed_windows(windows, corner, tiles.model_copy(update={"roi_margin": 2.0}))) == 6
    # the region is in the analysed image's pixels: a frame scaled in the decoder scales it too
    assert layout.region(320, 176).bounds == pytest.approx(tuple(v / 2 for v in layout.region().bounds))


def test_no_section_near_any_tile_runs_nothing(detector: Detector, left_only: CameraConfig, frames: list) -> None:
    dets = detector.detect(frames[0], left_only.detect, roi=box(5000, 5000, 5100, 5100))
    assert len(dets) == 0
    assert detector.last_timing["tiles"] == 0 and detector.last_timing["tiles_skipped"] == 6


def test_camera_stats_and_metrics_count_skipped_tiles(
    classroom: EdgeConfig, left_only: CameraConfig, detector: Detector, frames: list, tmp_path: Path
) -> None:
    cfg = classroom.model_copy(update={"cameras": [left_only], "state_dir": tmp_path / "state"})
    worker = CameraWorker(cfg, left_only, detector, threading.Event())  # publisher never started: no broker
    try:
        worker._analyse(Frame(frames[0], datetime.now(UTC), 0, time.monotonic()))
        assert (worker.stats.tiles_run, worker.stats.tiles_skipped) == (4, 2)
        tiles = next(f for f in EdgeCollector([worker]).collect() if f.name == "turnout_edge_tiles")
        assert {s.labels["outcome"]: s.value for s in tiles.samples} == {"run": 4, "skipped": 2, "reused": 0}
    finally:
        worker.close()
