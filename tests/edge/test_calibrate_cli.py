"""`turnout edge calibrate` on the real classroom video: writes the best setting and its measured calibration.

Every figure the command prints or writes is recomputed here from the detector's own counts on the same frames.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import _write_camera
from edge.config import CameraConfig, load_config
from edge.detector import Detector
from edge.zones import Layout
from tests.edge.conftest import run_turnout

CLASSROOM = Path(__file__).resolve().parents[2] / "deploy" / "edge-classroom.yaml"


def _errors(output: str) -> tuple[float, float]:
    m = re.search(r"error before: ([\d.]+)\s+after: ([\d.]+)", output)
    assert m, output
    return float(m[1]), float(m[2])


@pytest.fixture
def classroom_config(tmp_path: Path, shared: Path) -> Path:
    text = CLASSROOM.read_text().replace("${TURNOUT_SHARED}", str(shared))
    text = text.replace("state_dir: ../var/edge-classroom", f"state_dir: {tmp_path / 'state'}")
    path = tmp_path / "edge-classroom.yaml"
    path.write_text(text)
    return path


def _calibration(output: str) -> tuple[float, float, int]:
    m = re.search(r"calibration: bias ([\d.]+) spread ([\d.]+) over (\d+) frame", output)
    assert m, output
    return float(m[1]), float(m[2]), int(m[3])


@pytest.fixture(scope="module")
def detector(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)


def remeasure(detector: Detector, camera: CameraConfig, frames: int) -> np.ndarray:
    """Section counts of `camera.detect` on the frames the CLI samples (`frames` evenly spaced, from 0), read
    here by plain sequential decoding and counted with the plain detector."""
    cap = cv2.VideoCapture(str(camera.source))
    step = max(1, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // frames)
    images, i = [], 0
    while len(images) < frames and cap.grab():
        if i % step == 0:
            images.append(cap.retrieve()[1])
        i += 1
    cap.release()
    layout = Layout(camera, images[0].shape[1], images[0].shape[0])
    return np.array([sum(t.occupied for t in layout.count(detector.detect(im, camera.detect)).values()) for im in images])


def check_written(path: Path, output: str, detector: Detector, count: int, frames: int) -> CameraConfig:
    """The calibration in the file is the printed one, and an independent recomputation from the detector's
    counts and the manual count gives the same bias and spread; the printed error is the real one."""
    camera = load_config(path).camera("classroom")
    bias, spread, n = _calibration(output)
    cal = camera.calibration
    assert cal is not None and (cal.bias, cal.spread, cal.frames) == (bias, spread, n) == (cal.bias, cal.spread, frames)
    assert cal.at is not None and abs((datetime.now(UTC) - cal.at).total_seconds()) < 600
    counts = remeasure(detector, camera, frames)
    ratios = counts / count
    assert cal.bias == pytest.approx(ratios.mean(), abs=1e-4), (cal, counts.tolist())
    assert cal.spread == pytest.approx(ratios.std(ddof=1), abs=1e-4), (cal, counts.tolist())
    _before, after = _errors(output)
    assert after == pytest.approx(np.abs(counts - count).mean(), abs=0.006)
    return camera


def test_calibrate_writes_a_measured_calibration(classroom_config: Path, detector: Detector) -> None:
    """On the tuned setting: detect is kept, and the measured bias/spread replace the file's calibration block
    (deploy/edge-classroom.yaml ships one measured on 20 frames); nothing else changes."""
    original = classroom_config.read_text()
    head = original[: original.index("    calibration:")]
    assert "frames: 20" in original[len(head) :]
    before_cfg = load_config(classroom_config).camera("classroom")
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom",
                         "--count", "14", "--frames", "5", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    print(result.stdout[-400:])
    camera = check_written(classroom_config, result.stdout, detector, 14, 5)
    assert camera.detect == before_cfg.detect and "detect unchanged" in result.stdout
    assert 0.9 < camera.calibration.bias < 1.1  # measured: 1.0143 (counts 14, 13, 15, 14, 15)
    text = classroom_config.read_text()
    # comments survive, and the only change is the camera's calibration block
    assert text.startswith(head) and text.count("calibration:") == 1 and "frames: 5" in text[len(head) :]
    # calibrating again replaces the block instead of adding a second one
    _write_camera(classroom_config, "classroom", detect=None, calibration={"bias": 0.8, "spread": 0.1, "frames": 9})
    assert classroom_config.read_text().count("calibration:") == 1
    cal = load_config(classroom_config).camera("classroom").calibration
    assert (cal.bias, cal.spread, cal.frames, cal.at) == (0.8, 0.1, 9, None)


def test_calibrate_repairs_a_bad_setting(classroom_config: Path, detector: Detector) -> None:
    text = classroom_config.read_text()
    text = re.sub(r"      mode: tiled\n", "      mode: full\n", text)
    text = text.replace("conf: 0.2 ", "conf: 0.5 ")
    classroom_config.write_text(text)
    bad = load_config(classroom_config).camera("classroom").detect
    assert (bad.mode, bad.conf) == ("full", 0.5)
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom",
                         "--count", "14", "--frames", "5", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = _errors(result.stdout)
    assert before >= 5 and after <= before / 3, result.stdout  # measured: 10.6 -> 0.6 or 0.8
    fixed = check_written(classroom_config, result.stdout, detector, 14, 5)  # re-measured with the new setting
    assert fixed.detect != bad and fixed.detect.mode == "tiled" and "updated cameras[classroom].detect" in result.stdout
    assert "# Default seating config" in classroom_config.read_text()  # comments survive a rewrite


def test_calibrate_needs_exactly_one_target(classroom_config: Path) -> None:
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom")
    assert result.returncode == 2 and "exactly one of --count N or --points FILE" in result.stderr
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "nope", "--count", "3")
    assert result.returncode == 2 and "no camera 'nope'" in result.stderr
    assert os.path.exists(classroom_config)
