"""Post-training int8 quantization of a camera's model with NNCF (ONNX backend; no torch), behind an accuracy gate.

`quantize_for_camera` calibrates on the very inputs the camera's detector feeds the model (its tiles, or its
letterboxed frames), then counts the people in the camera's sections on the same frames with the fp32 and the
int8 model. The relative count error of each is ``mean |count - true count| / true count``; the int8 model is
written only when its error is at most ``max_drop`` (0.02: 2 points) worse than fp32's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import CameraConfig, ModelConfig
from edge.detector import Detector, letterbox
from edge.tiling import _tile_input, needed_windows, tile_windows
from edge.zones import Layout


class QuantizeError(RuntimeError):
    """Quantization is not possible or its accuracy gate failed (one line naming the file and the reason)."""


@dataclass(frozen=True)
class QuantizeResult:
    fp32_error: float  # relative count error of the fp32 model on the calibration frames
    int8_error: float
    fp32_counts: list[int]
    int8_counts: list[int]
    written: Path | None  # None: the gate refused


def model_inputs(det: Detector, camera: CameraConfig, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The (1, 3, H, W) blobs the detector would run for these frames (needed tiles, or the whole frame)."""
    blobs = []
    for frame in frames:
        h, w = frame.shape[:2]
        if camera.detect.mode == "tiled":
            layout = Layout(camera, w, h)
            shape = _tile_input(det, camera.detect.tiles)
            wins = needed_windows(tile_windows(w, h, camera.detect.tiles), layout.region(), camera.detect.tiles)
            images = [letterbox(frame[v.y0 : v.y1, v.x0 : v.x1], shape)[0] for v in wins]
            if camera.detect.tiles.full_frame:
                images.append(letterbox(frame, shape)[0])
        else:
            images = [letterbox(frame, det.input_size, auto=det.dynamic, stride=det.stride)[0]]
        blobs.extend(det.blob([img]).copy() for img in images)
    return blobs


def section_counts(det: Detector, camera: CameraConfig, frames: list[np.ndarray]) -> list[int]:
    """People counted in the camera's sections on each frame (raw, no smoothing or gating)."""
    out = []
    for frame in frames:
        layout = Layout(camera, frame.shape[1], frame.shape[0])
        dets = det.detect(frame, camera.detect, roi=layout.region())
        out.append(sum(t.people for t in layout.count(dets).values()))
    return out


def quantize_for_camera(
    model_path: Path,
    model: ModelConfig,
    camera: CameraConfig,
    frames: list[np.ndarray],
    true_count: int,
    out: Path,
    max_drop: float = 0.02,
) -> QuantizeResult:
    """Quantize ``model_path`` to int8 on ``frames``, gate on the count error, write ``out`` if it passes."""
    if true_count < 1:
        raise QuantizeError(f"{model_path}: --count must be the true number of people in the frames (>= 1)")
    try:
        import nncf
        import onnx
    except ImportError:
        raise QuantizeError(f"{model_path}: nncf is not installed (pip install 'turnout[quantize]')") from None
    fp32 = Detector.from_config(model_path, model.model_copy(update={"runtime": "onnxruntime", "precision": "fp32"}))
    blobs = model_inputs(fp32, camera, frames)
    if not blobs:
        raise QuantizeError(f"{model_path}: camera {camera.id} runs no tile near its sections: nothing to calibrate on")
    try:
        quantized = nncf.quantize(
            onnx.load(str(model_path)),
            nncf.Dataset(blobs, lambda b: {fp32.input_name: b}),
            subset_size=len(blobs),
            preset=nncf.QuantizationPreset.MIXED,
        )
    except Exception as exc:  # NNCF raises many types for models it cannot handle
        raise QuantizeError(f"{model_path}: NNCF cannot quantize it: {str(exc).splitlines()[0][:200]}") from None
    tmp = out.with_name(out.stem + ".tmp.onnx")  # OpenVINO reads a model by its extension
    onnx.save(quantized, str(tmp))
    try:
        return gate(fp32, Detector.from_config(tmp, model), camera, frames, true_count, tmp, out, max_drop)
    finally:
        tmp.unlink(missing_ok=True)


def gate(
    fp32: Detector,
    int8: Detector,
    camera: CameraConfig,
    frames: list[np.ndarray],
    true_count: int,
    candidate: Path,
    out: Path,
    max_drop: float,
) -> QuantizeResult:
    """Count with both models; move ``candidate`` (the int8 file) to ``out`` only when int8 passes the gate."""
    c32, c8 = section_counts(fp32, camera, frames), section_counts(int8, camera, frames)
    e32 = float(np.mean(np.abs(np.array(c32) - true_count))) / true_count
    e8 = float(np.mean(np.abs(np.array(c8) - true_count))) / true_count
    written = None
    if e8 - e32 <= max_drop:
        candidate.replace(out)
        written = out
    return QuantizeResult(e32, e8, c32, c8, written)
