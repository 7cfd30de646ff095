"""Runtimes (edge/runtimes.py): OpenVINO on the same .onnx file as onnxruntime, bf16, providers, errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, DetectConfig, load_config, parse_config
from edge.detections import Detections
from edge.detector import Detector
from edge.runtimes import ORT_PROVIDERS, RuntimeUnavailable, bf16_unsupported
from tests.edge.conftest import run_turnout, vtest_config
from tests.edge.test_detector import iou_matrix

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="the openvino extra is not installed (pip install 'turnout[openvino]')",
)

CFG = DetectConfig(conf=0.25, iou=0.7)


@pytest.fixture(scope="module")
def frames(shared: Path) -> dict[str, np.ndarray]:
    """bus.jpg and a real vtest.avi frame (a crowd of pedestrians)."""
    cap = cv2.VideoCapture(str(shared / "data/videos/vtest.avi"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return {"bus": cv2.imread(str(shared / "data/images/bus.jpg")), "vtest-300": frame}


@pytest.fixture(scope="module")
def ort_det(model_path: Path) -> Detector:
    return Detector(model_path, threads=2)


def match(a: Detections, b: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of each box of ``a`` in ``b`` and the score difference of that pair."""
    iou = iou_matrix(a.xyxy, b.xyxy)
    best = iou.argmax(axis=1)
    return iou.max(axis=1), np.abs(a.confidence - b.confidence[best])


@needs_openvino
def test_openvino_fp32_gives_the_same_people(model_path: Path, ort_det: Detector, frames: dict) -> None:
    ov_det = Detector(model_path, threads=2, runtime="openvino", precision="fp32")
    assert ov_det.runtime.startswith("openvino") and ov_det.input_size == ort_det.input_size
    for name, frame in frames.items():
        a, b = ort_det.detect(frame, CFG), ov_det.detect(frame, CFG)
        assert len(a) == len(b) >= 4, name
        iou, dscore = match(a, b)
        assert iou.min() > 0.99, (name, iou)
        assert dscore.max() < 1e-3, (name, dscore)


@needs_openvino
def test_openvino_tiled_classroom_counts_equal(shared: Path) -> None:
    """The dynamic-batch export through OpenVINO: all tiles of a real seated frame in one call, same people."""
    cam = load_config(Path(__file__).parents[2] / "deploy/edge-classroom.yaml").camera("classroom")
    cap = cv2.VideoCapture(str(cam.source))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    cap.release()
    assert ok
    dyn = shared / "models/yolo11n-recon-dyn.onnx"
    a = Detector(dyn, threads=2).detect(frame, cam.detect)
    ov_det = Detector(dyn, threads=2, runtime="openvino")
    b = ov_det.detect(frame, cam.detect)
    assert ov_det.last_timing["tiles"] == 6
    assert len(a) == len(b) >= 10
    assert match(a, b)[0].min() > 0.99


@needs_openvino
def test_openvino_bf16_close_to_fp32(model_path: Path, ort_det: Detector, frames: dict) -> None:
    why = bf16_unsupported()
    if why:
        pytest.skip(f"no bf16 on this machine: {why}")
    bf = Detector(model_path, threads=2, runtime="openvino", precision="bf16")
    a, b = ort_det.detect(frames["bus"], CFG), bf.detect(frames["bus"], CFG)
    assert len(a) == len(b)
    assert match(a, b)[0].min() > 0.8


@needs_openvino
def test_bf16_without_hardware_is_one_line(model_path: Path) -> None:
    why = bf16_unsupported()
    if why is None:
        pytest.skip("this CPU supports bf16: the error path cannot occur")
    with pytest.raises(RuntimeUnavailable) as err:
        Detector(model_path, runtime="openvino", precision="bf16")
    msg = str(err.value)
    assert "\n" not in msg and str(model_path) in msg and "bf16 is not supported" in msg


def test_missing_runtime_package_is_one_line(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(RuntimeUnavailable, match=r"openvino is not installed \(pip install 'turnout\[openvino\]'\)"):
        Detector(model_path, runtime="openvino")


def test_config_validates_runtime_choices(shared: Path, tmp_path: Path) -> None:
    base = vtest_config(shared, "v1", "mqtt://127.0.0.1:1883", tmp_path)
    ok = parse_config({**base, "model": {"providers": ["CUDA", "TensorrtExecutionProvider", "cpu"]}})
    assert ok.model.providers == ["cuda", "tensorrt", "cpu"] and ok.model.runtime == "onnxruntime"
    bad = {
        "precision bf16 needs runtime: openvino": {"precision": "bf16"},
        "providers apply to runtime: onnxruntime": {"runtime": "openvino", "providers": ["cuda"]},
        "model.runtime: Input should be 'onnxruntime' or 'openvino'": {"runtime": "tensorflow"},
        "model.precision": {"precision": "fp16"},
        "model.providers.0": {"providers": ["rocm"]},
    }
    for expected, model in bad.items():
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            parse_config({**base, "model": model})


def test_unavailable_provider_exits_with_one_line(shared: Path, tmp_path: Path, write_config) -> None:
    import onnxruntime as ort

    if ORT_PROVIDERS["tensorrt"] in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT: the error path cannot occur")
    cfg = vtest_config(shared, "v1", "mqtt://127.0.0.1:1883", tmp_path / "state")
    cfg["model"]["providers"] = ["TensorRT", "CPU"]
    result = run_turnout("edge", "run", "--config", str(write_config(cfg)), "--duration", "1")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "model.providers: tensorrt is not available in this onnxruntime build (available: " in lines[0]
