"""Cameras per box: Turnout's edge vs Ultralytics' predictor on the same frames, side by side in one run.

Two cameras, each analysed 2 times a second of video:

* seated: deploy/edge-classroom.yaml as shipped (6 tiles at scale 2, ROI tiles, static-scene gating), the
  22 analysis frames of the 11 s clip; MAE = |people counted in the sections - 14 seated students|;
* standing: deploy/edge-vtest.yaml (full frame), the first 40 analysis frames of vtest.avi; vtest has no
  labels, so its "MAE" is the mean |count - Turnout onnxruntime fp32's count| (agreement, not accuracy).

Contenders, each in its own process (one camera per process: its peak RSS is the memory of one camera):
Turnout on onnxruntime fp32, OpenVINO fp32 and OpenVINO bf16 (same .onnx file; bf16 only where the CPU has
it), and Ultralytics' predictor (``YOLO(export).predict``, conf as the camera's, IoU 0.7, person class) on its
own ONNX and OpenVINO exports of the same checkpoint (yolo11n-recon.pt), at 640 and, for the seated camera,
1280 (the size where its MAE comes closest to Turnout's). Ultralytics runs in a separate environment with
torch (never needed by the edge): /work/shared/README.md.

Printed per contender: CPU-ms per analysed frame (process CPU time, all threads), p95 latency, peak RSS,
MAE, cameras per box = 2 cores x 1000 CPU-ms/s / (2 analyses/s x CPU-ms), and the FLOP-bound limit:
the CPU's peak fp32 rate / (2 analyses/s x GFLOPs per analysis), with yolo11n at 6.5 GFLOPs per 640x640.

    .venv/bin/python benchmarks/bench_cameras.py --peer-python /work/bench-venv/bin/python

``--int8 FILE`` adds Turnout rows for an int8 model of the seated camera (`turnout models quantize`) on
onnxruntime and OpenVINO; ``--only TEXT`` runs only the contenders whose label contains TEXT (plus the
onnxruntime fp32 reference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FPS = 2.0
GFLOPS_640 = 6.5  # yolo11n per 640x640 image (Ultralytics' model table)
CAMERAS = {"seated": ("deploy/edge-classroom.yaml", "classroom", 22), "standing": ("deploy/edge-vtest.yaml", "plaza-cam", 40)}
EXPORTS = Path(os.environ.get("TURNOUT_BENCH_EXPORTS", "/tmp/turnout-bench-exports"))


def frames_of(video: str, count: int) -> list[tuple[float, np.ndarray]]:
    """The first ``count`` frames at FPS analyses per second of video, with their video time."""
    cap = cv2.VideoCapture(video)
    step = max(1, round(cap.get(cv2.CAP_PROP_FPS) / FPS))
    rate = cap.get(cv2.CAP_PROP_FPS)
    out, i = [], 0
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append((i / rate, frame))
        i += 1
    cap.release()
    return out


def measure(frames: list[tuple[float, np.ndarray]], analyse, warm_up: bool = True) -> dict:
    """Run ``analyse(t, frame) -> (boxes xyxy, extra)`` on each frame: CPU ms, wall ms, boxes, peak RSS."""
    if warm_up:
        analyse(*frames[0])  # first-call allocations, graph compilation
    cpu, wall, boxes, extra = [], [], [], []
    for t, frame in frames:
        c0, w0 = time.process_time(), time.perf_counter()
        xyxy, more = analyse(t, frame)
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
        boxes.append(np.asarray(xyxy, float).reshape(-1, 4).round(1).tolist())
        extra.append(more)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cpu_ms": cpu, "wall_ms": wall, "boxes": boxes, "extra": extra, "rss_mb": rss}


# ------------------------------------------------------------------------------------------ workers
def turnout_worker(camera: str, runtime: str, precision: str, model_file: str | None = None) -> dict:
    from edge.config import load_config
    from edge.detector import Detector
    from edge.gating import TileGate
    from edge.zones import Layout
    from turnout.paths import resolve_model

    path, cam_id, count = CAMERAS[camera]
    cfg = load_config(REPO / path)
    cam = cfg.camera(cam_id)
    model = cfg.model.model_copy(update={"runtime": runtime, "precision": precision})
    det = Detector.from_config(Path(model_file) if model_file else resolve_model(cfg.model.path), model)
    frames = frames_of(str(cam.source), count)
    layout = Layout(cam, *frames[0][1].shape[1::-1])
    state = {"gate": None}

    def analyse(t: float, frame: np.ndarray):
        dets = det.detect(frame, cam.detect, roi=layout.region(), gate=state["gate"], now=t)
        return dets.xyxy, int(det.last_timing.get("tiles", 1))

    analyse(*frames[0])
    state["gate"] = TileGate(cam.detect.gate) if cam.gating else None  # warm-up outside the gate's memory
    return measure(frames, analyse, warm_up=False)


def ultralytics_worker(camera: str, fmt: str, imgsz: int, conf: float, shared: str) -> dict:
    from ultralytics import YOLO

    _path, _cam_id, count = CAMERAS[camera]
    source = {"seated": "classroom_cctv_fixed_640x352_11s.mp4", "standing": "vtest.avi"}[camera]
    target = EXPORTS / f"yolo11n-recon-{imgsz}-{fmt}"
    if not target.exists():  # export once, outside the measured run
        target.mkdir(parents=True, exist_ok=True)
        pt = target / "yolo11n-recon.pt"
        pt.write_bytes((Path(shared) / "models/yolo11n-recon.pt").read_bytes())
        YOLO(str(pt)).export(format=fmt, imgsz=imgsz, dynamic=False, verbose=False)
    exported = next(target.glob("*.onnx"), None) if fmt == "onnx" else next(target.glob("*_openvino_model"))
    model = YOLO(str(exported), task="detect")
    frames = frames_of(str(Path(shared) / "data/videos" / source), count)
    args = {"conf": conf, "iou": 0.7, "imgsz": imgsz, "classes": [0], "verbose": False}

    def analyse(_t: float, frame: np.ndarray):
        r = model.predict(frame, **args)[0]
        return r.boxes.xyxy.numpy(), 1

    return measure(frames, analyse)


# ------------------------------------------------------------------------------------------ report
def run_worker(python: str, args: list[str]) -> dict | str:
    """One contender in its own process; its JSON result, or the reason it could not run."""
    proc = subprocess.run([python, __file__, "--worker", *args], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return lines[-1][:160] if lines else f"exit {proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_gflops() -> tuple[float, str]:
    """Peak fp32 GFLOP/s of the CPUs this process may use (FMA units x vector lanes x clock)."""
    flags = ""
    mhz = 0.0
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags") and not flags:
                flags = line
            if line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
    lanes = 16 if "avx512f" in flags else 8
    cores = len(os.sched_getaffinity(0))
    peak = cores * mhz / 1e3 * 2 * lanes * 2  # 2 FMA ports, 2 FLOPs per FMA
    return peak, f"{cores} cores x {mhz / 1e3:.1f} GHz x 2 FMA x {lanes} fp32 lanes x 2"


def count_people(camera: str, boxes: list[list[list[float]]]) -> list[int]:
    from edge.config import load_config
    from edge.detections import Detections
    from edge.zones import Layout

    path, cam_id, _count = CAMERAS[camera]
    cam = load_config(REPO / path).camera(cam_id)
    w, h = frames_of(str(cam.source), 1)[0][1].shape[1::-1]
    layout = Layout(cam, w, h)
    out = []
    for b in boxes:
        xyxy = np.asarray(b, np.float32).reshape(-1, 4)
        out.append(sum(t.people for t in layout.count(Detections(xyxy, np.ones(len(xyxy), np.float32))).values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", default="/work/bench-venv/bin/python", help="Python with ultralytics")
    ap.add_argument("--int8", type=Path, help="int8 model of the seated camera (turnout models quantize) to add")
    ap.add_argument("--only", default="", help="run only contenders whose label contains this text")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, camera, *rest = args.worker
        if kind == "turnout":
            result = turnout_worker(camera, rest[0], rest[1], rest[2] if len(rest) > 2 else None)
        else:
            result = ultralytics_worker(camera, rest[0], int(rest[1]), float(rest[2]), rest[3])
        print(json.dumps(result))
        return

    from edge.config import load_config
    from turnout.paths import shared_dir

    peak, how = peak_gflops()
    load0 = os.getloadavg()
    print(f"cameras per box, {FPS:g} analyses/s per camera; CPU peak fp32 {peak:.0f} GFLOP/s ({how}); "
          f"load average at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} on {os.cpu_count()} CPUs "
          "(other engineers share them: wall-clock latency is inflated, CPU-ms much less)")
    header = ("| camera | contender | frames | CPU-ms/frame | p95 latency ms | peak RSS MB | MAE | cameras/box | "
              "GFLOP/frame | FLOP-bound cameras |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for camera, (path, cam_id, _count) in CAMERAS.items():
        cam = load_config(REPO / path).camera(cam_id)
        contenders: list[tuple[str, str, list[str]]] = [
            ("Turnout onnxruntime fp32", sys.executable, ["turnout", camera, "onnxruntime", "fp32"]),
            ("Turnout OpenVINO fp32", sys.executable, ["turnout", camera, "openvino", "fp32"]),
            ("Turnout OpenVINO bf16", sys.executable, ["turnout", camera, "openvino", "bf16"]),
        ]
        if args.int8 and camera == "seated":
            for runtime, label in (("onnxruntime", "onnxruntime"), ("openvino", "OpenVINO")):
                contenders.append((f"Turnout {label} int8 ({args.int8.name})", sys.executable,
                                   ["turnout", camera, runtime, "fp32", str(args.int8)]))
        sizes = (640, 1280) if camera == "seated" else (640,)
        for size in sizes:
            for fmt, label in (("onnx", "ONNX"), ("openvino", "OpenVINO")):
                contenders.append((f"Ultralytics {label} {size}", args.peer_python,
                                   ["ultralytics", camera, fmt, str(size), str(cam.detect.conf), str(shared_dir())]))
        reference: list[int] | None = None
        for label, python, wargs in contenders:
            if args.only not in label and not label.endswith("onnxruntime fp32"):  # fp32: the reference
                continue
            res = run_worker(python, wargs)
            if isinstance(res, str):
                print(f"| {camera} | {label} | not run: {res} | | | | | | | |", flush=True)
                continue
            counts = count_people(camera, res["boxes"])
            if reference is None:
                reference = counts
            truth = [14] * len(counts) if camera == "seated" else reference
            mae = float(np.mean(np.abs(np.array(counts) - np.array(truth))))
            cpu = float(np.mean(res["cpu_ms"]))
            p95 = float(np.percentile(res["wall_ms"], 95))
            per_box = 2 * 1000 / (FPS * cpu)
            if label.startswith("Turnout"):
                tiles = float(np.mean(res["extra"]))
                size = cam.detect.tiles.size if cam.detect.mode == "tiled" else 640
                gflop = tiles * GFLOPS_640 * (size / 640) ** 2
            else:
                gflop = GFLOPS_640 * (int(wargs[3]) / 640) ** 2
            flop_bound = peak / (FPS * gflop)
            print(f"| {camera} | {label} | {len(counts)} | {cpu:.0f} | {p95:.0f} | {res['rss_mb']:.0f} | {mae:.2f} | "
                  f"{per_box:.1f} | {gflop:.1f} | {flop_bound:.0f} |", flush=True)
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f}")


if __name__ == "__main__":
    main()
