"""Seated audiences: the default seating config counts the 14 seated students of the classroom video."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import CameraConfig, DetectConfig, load_config
from edge.detector import Detector
from edge.zones import Layout, SectionSmoother
from turnout.paths import REPO_ROOT, resolve_model

SEATED = 14
CONFIG = REPO_ROOT / "deploy" / "edge-classroom.yaml"


def sample_frames(video: Path, fps: float) -> list[np.ndarray]:
    """Frames at ``fps`` (the camera's analysis rate); skipped frames are grabbed, not decoded."""
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened(), f"cannot open {video}"
    step = max(1, round(cap.get(cv2.CAP_PROP_FPS) / fps))
    frames, i = [], 0
    while cap.grab():
        if i % step == 0:
            ok, frame = cap.retrieve()
            assert ok
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def seated_counts(
    detector: Detector, camera: CameraConfig, frames: list[np.ndarray], detect: DetectConfig
) -> list[int]:
    """Seated people per analysed frame: sum over sections after the camera's hysteresis smoothing."""
    h, w = frames[0].shape[:2]
    layout = Layout(camera, w, h)
    hyst = camera.hysteresis
    smoother = SectionSmoother(window=hyst.window, seat_on=hyst.seat_on, seat_off=hyst.seat_off)
    counts = []
    for frame in frames:
        smoothed = smoother.update(layout.count(detector.detect(frame, detect)), layout)
        counts.append(sum(t.occupied for t in smoothed.values()))
    return counts


@pytest.fixture(scope="module")
def classroom(shared_env: None) -> tuple[CameraConfig, Detector, list[np.ndarray]]:
    cfg = load_config(CONFIG)
    camera = cfg.camera("classroom")
    frames = sample_frames(Path(str(camera.source)), camera.analysis_fps)
    detector = Detector(resolve_model(cfg.model.path), threads=cfg.model.threads)
    return camera, detector, frames


@pytest.fixture(scope="module")
def shared_env(shared: Path) -> Iterator[None]:
    """The config's source is ${TURNOUT_SHARED}/...; make sure the variable names the shared folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TURNOUT_SHARED", str(shared))
    mp.setenv("TURNOUT_MODEL_DIR", str(shared / "models"))
    yield
    mp.undo()


def test_default_config_is_tiled_seating(classroom: tuple[CameraConfig, Detector, list[np.ndarray]]) -> None:
    camera, detector, frames = classroom
    assert camera.detect.mode == "tiled"
    assert 30 <= sum(s.seats for s in camera.sections) <= 40  # about 36 chairs
    assert detector.batch_dynamic, "tiles should go through onnxruntime in one batched call"
    assert len(frames) >= 20


@pytest.fixture(scope="module")
def tiled_counts(classroom: tuple[CameraConfig, Detector, list[np.ndarray]]) -> list[int]:
    camera, detector, frames = classroom
    counts = seated_counts(detector, camera, frames, camera.detect)
    assert detector.last_timing["tiles"] > 1
    return counts


def test_counts_fourteen_seated(tiled_counts: list[int]) -> None:
    """14 ± 2 seated people on >= 90 % of analysed frames (2 fps of the 11 s video)."""
    within = np.mean(np.abs(np.array(tiled_counts) - SEATED) <= 2)
    assert within >= 0.9, f"14±2 on only {within:.0%} of frames: {tiled_counts}"


def test_plain_640_pass_is_not_enough(
    classroom: tuple[CameraConfig, Detector, list[np.ndarray]], tiled_counts: list[int]
) -> None:
    """The reason tiling is the default: the plain 640 pass at the predictor's threshold misses people."""
    camera, detector, frames = classroom
    full = seated_counts(detector, camera, frames, DetectConfig(mode="full", conf=0.25))
    tiled_err = np.mean(np.abs(np.array(tiled_counts) - SEATED))
    full_err = np.mean(np.abs(np.array(full) - SEATED))
    assert tiled_err < full_err, (tiled_counts, full)
