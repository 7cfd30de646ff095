"""Inference runtimes behind the detector: onnxruntime (with execution providers) or OpenVINO, same .onnx file.

`open_backend(path, ...)` returns a `Backend`: the model's input/output shapes, its ONNX ``metadata_props``
and a thread-safe ``run(blob)``. Anything this box cannot do (a runtime package that is not installed, a
provider missing from the onnxruntime build or failing to start, a device or a precision the hardware lacks)
raises `RuntimeUnavailable` with one line naming the file and the reason; a file the runtime cannot load
raises `ModelError`. `open_with_fallback` loads onnxruntime on the CPU instead when the configured runtime is
unavailable and ``model.fallback: cpu`` allows it. ``precision: int8`` needs a quantized file (`is_quantized`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Runtime = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
Provider = Literal["cpu", "cuda", "tensorrt", "openvino"]

ORT_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_PROVIDER_HINT: dict[str, str] = {
    "cuda": "install onnxruntime-gpu (NVIDIA driver + CUDA/cuDNN; Jetson: NVIDIA's onnxruntime wheel)",
    "tensorrt": "install onnxruntime-gpu with TensorRT libraries (Jetson: NVIDIA's onnxruntime wheel)",
    "openvino": "install onnxruntime-openvino, or use model.runtime: openvino",
    "cpu": "reinstall onnxruntime",
}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
log = logging.getLogger("turnout.edge")


class ModelError(RuntimeError):
    """The ONNX file cannot be used as a person detector; the message names the file and the problem."""


class RuntimeUnavailable(ModelError):
    """The configured runtime, provider, device or precision is not available on this box (one line)."""


@dataclass
class Backend:
    """A loaded model: shapes, metadata and ``run`` (NCHW float32 blob -> first output), safe across threads."""

    runtime: str
    detail: str  # e.g. "CPUExecutionProvider" or "CPU f32"
    input_name: str
    input_shape: list[int | str]
    output_shape: list[int | str]
    metadata: dict[str, str]
    _run: Any = field(repr=False)

    def run(self, blob: np.ndarray) -> np.ndarray:
        return self._run(blob)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unreadable, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_unsupported(device: str = "CPU") -> str | None:
    """Why bf16 inference is not possible here with OpenVINO on ``device``, or None when it is."""
    try:
        import openvino as ov
    except ImportError:
        return "the openvino package is not installed (pip install 'turnout[openvino]')"
    caps = ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    if "BF16" in caps:
        return None
    flags = cpu_flags() if device == "CPU" else set()
    have = ", ".join(sorted(flags & set(BF16_CPU_FLAGS))) or "none of " + "/".join(BF16_CPU_FLAGS)
    return f"OpenVINO device {device} has no BF16 support (capabilities {', '.join(caps)}; CPU flags: {have})"


def open_backend(
    path: Path,
    *,
    runtime: Runtime = "onnxruntime",
    precision: Precision = "fp32",
    providers: tuple[Provider, ...] | list[Provider] = ("cpu",),
    device: str = "CPU",
    threads: int = 2,
) -> Backend:
    """Load ``path`` with the chosen runtime; raises `RuntimeUnavailable` / `ModelError` (one line each)."""
    if precision == "int8" and not is_quantized(path):
        raise ModelError(
            f"{path}: model.precision: int8 needs a quantized model and this one has no QuantizeLinear/"
            "DequantizeLinear or FakeQuantize nodes; make one with `turnout models quantize`"
        )
    if runtime == "openvino":
        return _openvino(path, precision, device, threads)
    if runtime != "onnxruntime":
        raise RuntimeUnavailable(f"{path}: model.runtime: unknown runtime {runtime!r} (onnxruntime or openvino)")
    if precision == "bf16":
        raise RuntimeUnavailable(f"{path}: model.precision: {precision} needs model.runtime: openvino")
    return _onnxruntime(path, list(providers) or ["cpu"], threads)


def open_with_fallback(
    path: Path,
    *,
    runtime: Runtime = "onnxruntime",
    precision: Precision = "fp32",
    providers: tuple[Provider, ...] | list[Provider] = ("cpu",),
    device: str = "CPU",
    threads: int = 2,
    fallback: str | None = None,
) -> tuple[Backend, str | None]:
    """`open_backend`, or with ``fallback="cpu"`` onnxruntime on the CPU (same file) when the configured runtime,
    provider, device or precision is unavailable; returns the backend and the degraded reason (None: as
    configured). A file that cannot be loaded at all (`ModelError`) is never masked."""
    try:
        return open_backend(
            path, runtime=runtime, precision=precision, providers=providers, device=device, threads=threads
        ), None
    except RuntimeUnavailable as exc:
        if fallback != "cpu":
            raise
        why = str(exc).removeprefix(f"{path}: ")
    backend = open_backend(path, runtime="onnxruntime", precision="int8" if precision == "int8" else "fp32",
                           providers=("cpu",), threads=threads)
    reason = f"fallback: running onnxruntime on the CPU (model.fallback: cpu) because {why}"
    log.warning("%s: %s", path, reason)
    return backend, reason[:500]


def is_quantized(path: Path) -> bool:
    """Whether ``path`` is an int8 model: ONNX QuantizeLinear/DequantizeLinear (QDQ) or QLinear*/Integer nodes,
    or FakeQuantize layers of an OpenVINO IR (.xml)."""
    if path.suffix == ".xml":
        return 'type="FakeQuantize"' in path.read_text(errors="replace")
    try:
        import onnx
    except ImportError:  # the edge does not need onnx: op types are plain strings in the protobuf
        data = path.read_bytes()
        return any(op.encode() in data for op in QUANT_OPS)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # a DecodeError for files that are not ONNX
        raise ModelError(f"{path}: not a loadable ONNX model: {str(exc).splitlines()[0][:200]}") from None
    return any(node.op_type in QUANT_OPS for node in graph.node)


def _onnxruntime(path: Path, providers: list[str], threads: int) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable(
            f"{path}: model.runtime: onnxruntime is not installed (pip install 'turnout[edge]')"
        ) from None
    available = set(ort.get_available_providers())
    for name in providers:
        if ORT_PROVIDERS[name] not in available:
            have = ", ".join(k for k, v in ORT_PROVIDERS.items() if v in available)
            raise RuntimeUnavailable(
                f"{path}: model.providers: {name} is not available in this onnxruntime build "
                f"(available: {have}); {_PROVIDER_HINT[name]}"
            )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    wanted = [ORT_PROVIDERS[n] for n in providers]
    try:
        session = ort.InferenceSession(str(path), opts, providers=wanted)
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"{path}: not a loadable ONNX model: {exc}") from None
    started = session.get_providers()
    for name in providers:  # onnxruntime silently drops a provider whose driver/libraries fail to load
        if ORT_PROVIDERS[name] not in started:
            raise RuntimeUnavailable(
                f"{path}: model.providers: {name} failed to start (driver or libraries missing?); "
                f"running providers: {', '.join(started)}"
            )
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelError(f"{path}: expected one NCHW image input, got {[i.shape for i in inputs]}")
    in_name, out_name = inputs[0].name, outputs[0].name

    def run(blob: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: blob})[0]

    return Backend(
        "onnxruntime",
        started[0],
        in_name,
        list(inputs[0].shape),
        list(outputs[0].shape),
        dict(session.get_modelmeta().custom_metadata_map),
        run,
    )


def _dims(shape: Any) -> list[int | str]:
    """An OpenVINO partial shape as onnxruntime writes it: ints, and a name for dynamic dimensions."""
    return [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(shape)]


def _openvino(path: Path, precision: str, device: str, threads: int) -> Backend:
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeUnavailable(
            f"{path}: model.runtime: openvino is not installed (pip install 'turnout[openvino]')"
        ) from None
    core = ov.Core()
    if device not in core.available_devices:
        raise RuntimeUnavailable(
            f"{path}: model.device: OpenVINO has no device {device} here (available: {', '.join(core.available_devices)})"
        )
    if precision == "bf16" and (why := bf16_unsupported(device)):
        raise RuntimeUnavailable(f"{path}: model.precision: bf16 is not supported: {why}")
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long C++ traces
        raise ModelError(f"{path}: OpenVINO cannot read this model: {str(exc).splitlines()[0][:200]}") from None
    if len(model.inputs) != 1 or len(model.inputs[0].get_partial_shape()) != 4:
        raise ModelError(f"{path}: expected one NCHW image input, got {[str(i.get_partial_shape()) for i in model.inputs]}")
    metadata: dict[str, str] = {}
    if model.has_rt_info(["framework"]):  # the ONNX metadata_props
        for key in ("names", "stride", "imgsz", "end2end"):
            if model.has_rt_info(["framework", key]):
                metadata[key] = model.get_rt_info(["framework", key]).astype(str)
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]  # int8: quantized layers run in int8
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        compiled = core.compile_model(model, device, config)
    except Exception as exc:
        raise ModelError(f"{path}: OpenVINO cannot compile it for {device}: {str(exc).splitlines()[0][:200]}") from None
    local = threading.local()  # an infer request is not thread-safe: one per camera thread

    def run(blob: np.ndarray) -> np.ndarray:
        req = getattr(local, "request", None)
        if req is None:
            req = local.request = compiled.create_infer_request()
        req.infer({0: blob})
        return req.get_output_tensor(0).data.copy()

    return Backend(
        "openvino",
        f"{device} {'int8' if precision == 'int8' else hint}",
        model.inputs[0].get_any_name(),
        _dims(model.inputs[0].get_partial_shape()),
        _dims(model.outputs[0].get_partial_shape()),
        metadata,
        run,
    )
