"""`model.fallback: cpu` (a runtime/device/provider missing at start: onnxruntime CPU, cameras `degraded`) and
`model.precision: int8` on a file that is not quantized (one-line error, exit 2). Real devices this box lacks:
OpenVINO device GPU, onnxruntime's CUDA provider."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edge.detector import Detector
from edge.runtimes import ModelError, RuntimeUnavailable, is_quantized
from tests.edge.conftest import run_turnout, vtest_config
from tests.edge.mqtt_tools import Recorder


def _no_gpu() -> bool:
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov

    return not any(d.startswith("GPU") for d in ov.Core().available_devices)


needs_missing_gpu = pytest.mark.skipif(not _no_gpu(), reason="needs openvino and a box without an OpenVINO GPU")


@needs_missing_gpu
def test_missing_openvino_device_falls_back_to_cpu_and_reports_degraded(
    shared: Path, tmp_path: Path, write_config, system_broker, venue_id
) -> None:
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", analysis_fps=2)
    cfg["model"].update(runtime="openvino", device="GPU")
    strict = write_config(cfg, "strict.yaml")
    done = run_turnout("edge", "check", "--config", str(strict), timeout=60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert "yolo11n-recon.onnx" in err[0] and "device GPU" in err[0]

    cfg["model"]["fallback"] = "cpu"
    path = write_config(cfg)
    sub = Recorder(system_broker.host, system_broker.port, f"turnout/v1/{venue_id}/#")
    try:
        result = run_turnout("edge", "run", "--config", str(path), "--duration", "6", timeout=60)
        sub.barrier()
    finally:
        sub.close()
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "model.fallback: cpu" in line]
    assert len(warnings) == 1 and "device GPU" in warnings[0], result.stderr[-2000:]
    kinds = {m.topic.rsplit("/", 1)[-1] for m in sub.messages}
    assert "occupancy" in kinds  # it counts, on the CPU
    statuses = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/status")]
    states = [s["state"] for s in statuses]
    assert "online" not in states and states[-1] == "offline", states
    fell_back = [s["reason"] for s in statuses if s["state"] == "degraded" and "fallback" in (s.get("reason") or "")]
    assert fell_back and "onnxruntime on the CPU" in fell_back[-1] and "GPU" in fell_back[-1], statuses


def test_missing_cuda_provider_falls_back_only_when_allowed(model_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(RuntimeUnavailable, match="providers: cuda is not available"):
        Detector(model_path, providers=["cuda"])
    det = Detector(model_path, providers=["cuda"], fallback="cpu")
    assert det.runtime == "onnxruntime (CPUExecutionProvider)"
    assert det.degraded and "providers: cuda" in det.degraded
    assert Detector(model_path).degraded is None


def test_int8_precision_needs_a_quantized_model(
    shared: Path, model_path: Path, tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not is_quantized(model_path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # the edge without the onnx package: byte scan of the file
    assert not is_quantized(model_path)
    monkeypatch.delitem(sys.modules, "onnx")
    with pytest.raises(ModelError, match="turnout models quantize"):
        Detector(model_path, precision="int8")
    with pytest.raises(ModelError, match="turnout models quantize"):  # no fallback masks a wrong file
        Detector(model_path, precision="int8", runtime="openvino", fallback="cpu")
    cfg = vtest_config(shared, "v-int8", "mqtt://127.0.0.1:1883", tmp_path / "state")
    cfg["model"]["precision"] = "int8"
    done = run_turnout("edge", "check", "--config", str(write_config(cfg)), timeout=60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert str(model_path) in err[0] and "turnout models quantize" in err[0]
