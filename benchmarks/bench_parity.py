"""Runtime parity and precision drift: per-frame people counts of every runtime/precision vs onnxruntime fp32.

Same ONNX files, same frames, the deploy configs' detect blocks: vtest.avi (deploy/edge-vtest.yaml, full frame,
yolo11n-recon.onnx) and the classroom clip (deploy/edge-classroom.yaml, 6 tiles, yolo11n-recon-dyn.onnx). int8 is
an NNCF post-training model made here from the camera's own inputs (``models.quantize.model_inputs`` on
``--calib`` frames spread over the clip, as `turnout models quantize` does), run on both runtimes. Prints, per
row: frames, share within ±1 of onnxruntime fp32, mean / max |count difference|, mean count, ms per frame.
The fp32 criterion (≥ 99 % within ±1) is asserted by tests/edge/test_runtime_parity.py.

    .venv/bin/python benchmarks/bench_parity.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig, load_config
from edge.detector import Detector
from edge.runtimes import ModelError
from models.quantize import model_inputs
from turnout.paths import REPO_ROOT, shared_dir

ROWS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8"),
        ("openvino", "int8"))


def frames_of(video: Path, step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(frame)
        i += 1
    cap.release()
    return out


def quantize(src: Path, camera: CameraConfig, frames: list[np.ndarray], out: Path) -> Path:
    """An int8 copy of ``src`` calibrated on the camera's own model inputs (NNCF, no accuracy gate here)."""
    import nncf
    import onnx

    fp32 = Detector(src, threads=2)
    blobs = model_inputs(fp32, camera, frames)
    q = nncf.quantize(onnx.load(str(src)), nncf.Dataset(blobs, lambda b: {fp32.input_name: b}),
                      subset_size=len(blobs), preset=nncf.QuantizationPreset.MIXED)
    onnx.save(q, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vtest-step", type=int, default=2, help="every Nth vtest.avi frame")
    ap.add_argument("--classroom-step", type=int, default=5, help="every Nth classroom frame")
    ap.add_argument("--calib", type=int, default=16, help="calibration frames for the int8 model")
    ap.add_argument("--no-int8", action="store_true")
    a = ap.parse_args()
    shared = shared_dir()
    if shared is None:
        raise SystemExit("set TURNOUT_SHARED to the shared/ folder")
    os.environ.setdefault("TURNOUT_SHARED", str(shared))
    vtest = load_config(REPO_ROOT / "deploy/edge-vtest.yaml").cameras[0]
    classroom = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").cameras[0]
    cases = [(vtest, "yolo11n-recon.onnx", a.vtest_step, "full 640x640"),
             (classroom, "yolo11n-recon-dyn.onnx", a.classroom_step, "6 tiles, max_batch 4")]
    print("## Runtime parity and drift vs onnxruntime fp32 (per-frame people count, same ONNX file and frames)")
    print("| video, setting | runtime | precision | frames | within ±1 | mean abs diff | max abs diff | mean count "
          "| ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cam, model, step, what in cases:
            frames = frames_of(Path(str(cam.source)), step)
            src = shared / "models" / model
            int8: Path | str | None = None
            if not a.no_int8:
                try:
                    calib = frames[:: max(1, len(frames) // a.calib)][: a.calib]
                    int8 = quantize(src, cam, calib, Path(tmp) / f"{cam.id}-int8.onnx")
                except ImportError as exc:
                    int8 = f"not run: {exc} (pip install 'turnout[quantize]')"
            base: np.ndarray | None = None
            for runtime, precision in ROWS:
                label = f"| {Path(str(cam.source)).name}, {what} | {runtime} | {precision} |"
                path = int8 if precision == "int8" else src
                if not isinstance(path, Path):
                    print(f"{label} {path or 'not run: --no-int8'} | | | | | |")
                    continue
                try:
                    det = Detector(path, threads=2, runtime=runtime, precision=precision, max_batch=4)  # type: ignore[arg-type]
                except ModelError as exc:
                    print(f"{label} not run: {str(exc).split(': ', 1)[1]} | | | | | |")
                    continue
                t0 = time.perf_counter()
                counts = np.array([len(det.detect(f, cam.detect)) for f in frames])
                ms = (time.perf_counter() - t0) * 1e3 / len(frames)
                if base is None:
                    base = counts
                diff = np.abs(counts - base)
                print(f"{label} {len(frames)} | {np.mean(diff <= 1):.1%} | {diff.mean():.3f} | {diff.max()} | "
                      f"{counts.mean():.2f} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
