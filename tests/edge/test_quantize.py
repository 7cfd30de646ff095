"""`turnout models quantize`: NNCF post-training int8 on a camera's own frames, behind a count-error gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import onnx
import pytest

from edge.config import load_config
from edge.detector import Detector
from edge.runtimes import is_quantized
from models.quantize import gate, quantize_for_camera
from tests.edge.conftest import run_turnout

REPO = Path(__file__).parents[2]
pytest.importorskip("nncf", reason="the quantize extra (nncf) is not installed")


def test_int8_model_is_written_within_the_gate_and_refused_beyond_it(shared: Path, tmp_path: Path) -> None:
    """On a vtest.avi frame (cheap: one 640 image; the three walkers fp32 finds in the sections are the count)."""
    cfg = load_config(REPO / "deploy/edge-vtest.yaml")
    cam = cfg.camera("plaza-cam")
    frame = cv2.VideoCapture(str(cam.source)).read()[1]
    src = shared / "models/yolo11n-recon.onnx"
    out = tmp_path / "vtest-int8.onnx"
    res = quantize_for_camera(src, cfg.model, cam, [frame], 3, out)
    assert res.fp32_counts == [3]
    assert res.written == out and out.is_file()
    assert res.int8_error - res.fp32_error <= 0.02  # the gate: within 2 points of fp32
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized, not a copy
    assert is_quantized(out) and not is_quantized(src)
    int8 = Detector(out, threads=2, precision="int8")  # model.precision: int8 accepts the quantized file
    assert len(int8.detect(frame, cam.detect)) >= 3  # a usable detector: the walkers are found
    # the same int8 model behind a gate it cannot pass (-1): nothing is written, both errors are reported
    candidate = tmp_path / "candidate.onnx"
    shutil.copy(out, candidate)
    refused = gate(Detector(src, threads=2), int8, cam, [frame], 3, candidate, tmp_path / "refused.onnx", -1.0)
    assert refused.written is None and not (tmp_path / "refused.onnx").exists()
    assert (refused.fp32_error, refused.int8_error) == (res.fp32_error, res.int8_error)


def test_quantize_command_rejects_a_missing_true_count(tmp_path: Path) -> None:
    done = run_turnout("models", "quantize", "--config", str(REPO / "deploy/edge-classroom.yaml"), "--camera",
                       "classroom", "--count", "0", "--frames", "1", "--out", str(tmp_path / "x.onnx"), timeout=120)
    assert done.returncode == 2 and not (tmp_path / "x.onnx").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--count must be the true number of people" in lines[0], done.stderr
