"""Calibration search against a manual count (classroom video) and against clicked head points."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.calibrate import SearchGrid, format_table, load_points, search
from edge.config import CameraConfig, DetectConfig, load_config
from edge.detector import Detector
from turnout.paths import REPO_ROOT


@pytest.fixture(scope="module")
def classroom(shared: Path) -> tuple[CameraConfig, list[np.ndarray]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TURNOUT_SHARED", str(shared))
    camera = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").camera("classroom")
    mp.undo()
    cap = cv2.VideoCapture(str(camera.source))
    frames, i = [], 0
    while cap.grab():
        if i % 45 == 0:  # 5 snapshots spread over the 11 s
            frames.append(cap.retrieve()[1])
        i += 1
    cap.release()
    return camera, frames


@pytest.fixture(scope="module")
def dyn(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)


def test_never_worse_than_the_current_setting(dyn: Detector, classroom: tuple[CameraConfig, list]) -> None:
    camera, frames = classroom
    result = search(dyn, frames, camera, 14)
    assert result.error_after <= result.error_before
    if not result.improved:
        assert result.best == camera.detect
    assert "MAE" in format_table(result)


def test_bad_setting_is_corrected(dyn: Detector, classroom: tuple[CameraConfig, list]) -> None:
    """From a deliberately poor setting (full 640 at conf 0.5) the search cuts the error substantially."""
    camera, frames = classroom
    bad = camera.model_copy(update={"detect": DetectConfig(mode="full", conf=0.5)})
    result = search(dyn, frames, bad, 14)
    assert result.error_before >= 4
    assert result.error_after <= result.error_before / 3
    assert result.best != bad.detect


def test_unreachable_target_keeps_current(dyn: Detector, classroom: tuple[CameraConfig, list]) -> None:
    """When no setting is strictly better, the current one is kept."""
    camera, frames = classroom
    grid = SearchGrid(conf=(0.9,), scale=(2.0,), include_full=False)
    result = search(dyn, frames, camera, 14, grid)
    assert result.best == camera.detect and result.error_after == result.error_before


def head_points(label: Path, w: int, h: int) -> list[tuple[float, float]]:
    """Head points of a real labelled photo: top-centre of each person box, 10 % down."""
    pts = []
    for line in label.read_text().splitlines():
        cls, cx, cy, _bw, bh = line.split()[:5]
        if cls == "0":
            top = (float(cy) - float(bh) / 2) * h
            pts.append((float(cx) * w, top + 0.1 * float(bh) * h))
    return pts


def test_head_points_target(dyn: Detector, shared: Path, tmp_path: Path) -> None:
    root = shared / "data/dev_people_capston2"
    name = "clip_main_lobby_Tan_mp4-102_jpg.rf.b63bcfb04cfea628e558d71515b6b640"
    img = cv2.imread(str(root / "images" / f"{name}.jpg"))
    h, w = img.shape[:2]
    points = head_points(root / "labels" / f"{name}.txt", w, h)
    assert len(points) >= 3
    path = tmp_path / "heads.json"
    path.write_text(json.dumps([{"x": x, "y": y} for x, y in points]))
    np.testing.assert_allclose(load_points(path), points)
    camera = CameraConfig(
        id="lobby",
        source="lobby.mp4",
        anchor="center",
        detect=DetectConfig(mode="full", conf=0.6),
        sections=[{"id": "all", "seats": 100, "polygon": [[0, 0], [w, 0], [w, h], [0, h]]}],
    )
    result = search(dyn, [img], camera, points, SearchGrid(scale=(2.0,)))
    assert result.target == len(points)
    assert result.recall_before is not None and result.recall_after is not None
    assert 0.0 <= result.recall_before <= 1.0
    assert result.error_after <= result.error_before
    assert result.recall_after >= result.recall_before or result.error_after < result.error_before


def test_points_files(tmp_path: Path) -> None:
    csv_file = tmp_path / "heads.csv"
    csv_file.write_text("x,y\n10,20\n30.5,40\n")
    assert load_points(csv_file) == [(10.0, 20.0), (30.5, 40.0)]
    bad = tmp_path / "bad.csv"
    bad.write_text("10,abc\n")
    with pytest.raises(ValueError, match=r"bad\.csv: point 1"):
        load_points(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_points(tmp_path / "missing.json")
