"""Edge benchmark: Turnout's detector vs Ultralytics' predictor on the same ONNX files and frames.

Prints two tables:

1. analysis frames/s on vtest.avi and crowd_topdown_1280x720.mp4 (yolo11n, analysis at ``--analysis-fps``),
   with time per analysed frame split into decode, pre-process, inference and post-process;
2. person-count MAE on dev_people_capston2 (labels/counts.csv) and on the classroom video (people counted in
   the sections of deploy/edge-classroom.yaml vs the 14 seated), with and without tiling / high resolution.

Runs without Ultralytics too (then only Turnout's rows, and says why). Reproduce (see docs/benchmarks.md):

    /work/bench-venv/bin/python benchmarks/bench_edge.py

``--runtimes-only`` prints just the runtime table: onnxruntime vs OpenVINO fp32 vs OpenVINO bf16 on the same
ONNX files and frames, side by side (bf16 says why where the hardware lacks it):

    .venv/bin/python benchmarks/bench_edge.py --runtimes-only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig, DetectConfig, TileConfig, load_config
from edge.detections import Detections
from edge.detector import Detector
from edge.runtimes import RuntimeUnavailable
from edge.sources import Frame, FrameSource
from edge.zones import Layout
from turnout.paths import REPO_ROOT, shared_dir

STAGES = ("decode", "preprocess", "inference", "postprocess")


def analysed_frames(video: Path, analysis_fps: float, limit: int) -> Iterator[tuple[np.ndarray, float]]:
    """Frames at the analysis rate; skipped frames are grab()bed (demuxed, not converted). Yields decode ms."""
    cap = cv2.VideoCapture(str(video))
    step = max(1, round(cap.get(cv2.CAP_PROP_FPS) / analysis_fps))
    i = n = 0
    t0 = time.perf_counter()
    while n < limit and cap.grab():
        if i % step == 0:
            ok, frame = cap.retrieve()
            if not ok:
                break
            yield frame, (time.perf_counter() - t0) * 1e3
            n += 1
            t0 = time.perf_counter()
        i += 1
    cap.release()


def bench_turnout(det: Detector, video: Path, cfg: DetectConfig, fps: float, limit: int) -> dict[str, float]:
    """Turnout's own staged pipeline: the capture thread decodes the next frame while the detector runs.

    Same classes as `turnout edge run` (`FrameSource` in a thread feeding a bounded queue, `Detector`),
    without MQTT; files as fast as possible (`realtime: false`), so no analysis frame is skipped.
    """
    camera = CameraConfig.model_validate(
        {
            "id": "bench",
            "source": str(video),
            "loop": False,
            "realtime": False,
            "analysis_fps": fps,
            "sections": [{"id": "all", "seats": 1, "polygon": [[0, 0], [1, 0], [1, 1]]}],
            "detect": cfg.model_dump(),
        }
    )
    frames: queue.Queue[Frame | None] = queue.Queue(maxsize=2)
    stop = threading.Event()
    decode_ms: list[float] = []

    def capture() -> None:
        t0 = time.perf_counter()
        for frame in FrameSource(camera, stop).frames():
            decode_ms.append((time.perf_counter() - t0) * 1e3)
            frames.put(frame)
            t0 = time.perf_counter()
            if stop.is_set():
                break
        frames.put(None)

    totals = dict.fromkeys(STAGES[1:], 0.0)
    n = 0
    det.detect(np.zeros((360, 480, 3), np.uint8), cfg)  # warm-up
    start = time.perf_counter()
    worker = threading.Thread(target=capture, daemon=True)
    worker.start()
    while (frame := frames.get()) is not None:
        det.detect(frame.image, cfg)
        for k in STAGES[1:]:
            totals[k] += det.last_timing[k]
        n += 1
        if n >= limit:
            stop.set()
            break
    wall = time.perf_counter() - start
    stop.set()
    with contextlib.suppress(queue.Empty):
        while True:
            frames.get_nowait()
    worker.join(5)
    decode = float(np.mean(decode_ms[:n])) if decode_ms else 0.0
    return {"fps": n / wall, "frames": n, "decode": decode, **{k: v / n for k, v in totals.items()}}


def bench_ultralytics(model: object, video: Path, fps: float, limit: int, imgsz: int) -> dict[str, float]:
    """The predictor on its own video loader (vid_stride skips frames like Turnout's analysis rate)."""
    cap = cv2.VideoCapture(str(video))
    stride = max(1, round(cap.get(cv2.CAP_PROP_FPS) / fps))
    cap.release()
    args = {"conf": 0.25, "iou": 0.7, "imgsz": imgsz, "classes": [0], "verbose": False}
    model.predict(np.zeros((360, 480, 3), np.uint8), **args)  # warm-up
    totals = dict.fromkeys(STAGES, 0.0)
    n = 0
    start = last = time.perf_counter()
    for r in model.predict(str(video), stream=True, vid_stride=stride, **args):
        now = time.perf_counter()
        spent = sum(r.speed.values())
        totals["decode"] += max(0.0, (now - last) * 1e3 - spent)
        for k in STAGES[1:]:
            totals[k] += r.speed[k]
        last = now
        n += 1
        if n >= limit:
            break
    wall = time.perf_counter() - start
    return {"fps": n / wall, "frames": n, **{k: v / n for k, v in totals.items()}}


def interleaved(runs: dict[str, Callable[[], dict[str, float]]], repeats: int) -> dict[str, dict[str, float]]:
    """Run every contender `repeats` times in alternation (A B A B ...) and keep each one's median run.

    This machine is noisy; alternating spreads background load evenly over the contenders.
    """
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return {name: sorted(rs, key=lambda r: r["fps"])[len(rs) // 2] for name, rs in results.items()}


def ultra_counter(model: object, imgsz: int) -> Callable[[np.ndarray], Detections]:
    def detect(frame: np.ndarray) -> Detections:
        r = model.predict(frame, conf=0.25, iou=0.7, imgsz=imgsz, classes=[0], verbose=False)[0]
        return Detections(r.boxes.xyxy.numpy().astype(np.float32), r.boxes.conf.numpy().astype(np.float32))

    return detect


def dev_mae(shared: Path, detect: Callable[[np.ndarray], Detections], every: int) -> float:
    root = shared / "data/dev_people_capston2"
    rows = list(csv.DictReader((root / "counts.csv").open()))[::every]
    errs = [abs(len(detect(cv2.imread(str(root / "images" / r["image"])))) - int(r["person_count"])) for r in rows]
    return float(np.mean(errs))


def classroom_mae(detect: Callable[[np.ndarray], Detections], frames: list[np.ndarray], layout: Layout) -> float:
    counts = [sum(t.occupied for t in layout.count(detect(f)).values()) for f in frames]
    return float(np.mean(np.abs(np.array(counts) - 14)))


RUNTIMES = (("onnxruntime fp32", "onnxruntime", "fp32"), ("openvino fp32", "openvino", "fp32"),
            ("openvino bf16", "openvino", "bf16"))


def runtime_table(shared: Path, threads: int, fps: float, limit: int, repeats: int) -> None:
    """Turnout's pipeline on each runtime/precision, same ONNX file and frames, interleaved runs."""
    cam = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").camera("classroom")
    cases = [
        ("vtest.avi", "yolo11n-recon.onnx", DetectConfig(conf=0.25, iou=0.7), "full 640x640"),
        (Path(str(cam.source)).name, "yolo11n-recon-dyn.onnx", cam.detect, "classroom config: 6 tiles, 1 call"),
    ]
    print(f"\n## Runtimes (same ONNX file, {threads} threads, analysis at {fps:g} fps, ms per analysed frame)")
    print("| video | model, setting | runtime | frames | analysis frames/s | vs onnxruntime | preprocess | inference | "
          "postprocess |")
    print("|---|---|---|---|---|---|---|---|---|")
    for video, model, cfg, what in cases:
        runs: dict[str, Callable[[], dict[str, float]]] = {}
        missing: dict[str, str] = {}
        for label, runtime, precision in RUNTIMES:
            try:
                det = Detector(shared / "models" / model, threads=threads, runtime=runtime, precision=precision)
            except RuntimeUnavailable as exc:
                missing[label] = str(exc).split(": ", 1)[1]
                continue
            runs[label] = partial(bench_turnout, det, shared / "data/videos" / video, cfg, fps, limit)
        results = interleaved(runs, repeats)
        base = results.get("onnxruntime fp32", {}).get("fps")
        for label, _, _ in RUNTIMES:
            if label in missing:
                print(f"| {video} | {model}, {what} | {label} | not run: {missing[label]} | | | | | |")
                continue
            r = results[label]
            ratio = f"{r['fps'] / base:.2f}x" if base else ""
            stages = " | ".join(f"{r[k]:.1f}" for k in STAGES[1:])
            print(f"| {video} | {model}, {what} | {label} | {r['frames']} | {r['fps']:.1f} | {ratio} | {stages} |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--analysis-fps", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=1000, help="max analysed frames per video")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads for Turnout")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs per contender (median kept)")
    ap.add_argument("--skip-mae", action="store_true", help="throughput table only")
    ap.add_argument("--dev-every", type=int, default=1, help="use every Nth dev image (1 = all 109)")
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--runtimes-only", action="store_true", help="only the onnxruntime / OpenVINO fp32 / bf16 table")
    a = ap.parse_args()
    shared = shared_dir()
    if shared is None:
        raise SystemExit("set TURNOUT_SHARED to the shared/ folder")
    os.environ.setdefault("TURNOUT_SHARED", str(shared))
    if a.runtimes_only:
        runtime_table(shared, a.threads, a.analysis_fps, a.limit, a.repeats)
        return
    static_onnx, dyn_onnx = shared / "models/yolo11n-recon.onnx", shared / "models/yolo11n-recon-dyn.onnx"
    det, dyn = Detector(static_onnx, threads=a.threads), Detector(dyn_onnx, threads=a.threads)
    full = DetectConfig(conf=0.25, iou=0.7)
    ultra = ultra_dyn = None
    why = ""
    if a.no_ultralytics:
        why = "--no-ultralytics given"
    else:
        try:
            from ultralytics import YOLO

            ultra, ultra_dyn = YOLO(str(static_onnx), task="detect"), YOLO(str(dyn_onnx), task="detect")
        except ImportError as exc:
            why = f"ultralytics not importable ({exc}); install it in a separate venv, see docs/benchmarks.md"

    print(f"## Throughput (yolo11n, analysis at {a.analysis_fps:g} fps, {a.threads} ORT threads, ms per frame)")
    print(f"| video | runner | frames | analysis frames/s | {' | '.join(STAGES)} |")
    print("|---|---|---|---|" + "---|" * len(STAGES))
    for video in ("vtest.avi", "crowd_topdown_1280x720.mp4"):
        path = shared / "data/videos" / video
        for label, tdet, umodel in (("static 640x640", det, ultra), ("dynamic, rect input", dyn, ultra_dyn)):
            runs: dict[str, Callable[[], dict[str, float]]] = {
                f"Turnout ({label})": partial(bench_turnout, tdet, path, full, a.analysis_fps, a.limit)
            }
            if umodel is not None:
                runs[f"Ultralytics ({label})"] = partial(bench_ultralytics, umodel, path, a.analysis_fps, a.limit, 640)
            rows = list(interleaved(runs, a.repeats).items())
            for name, r in rows:
                stages = " | ".join(f"{r[k]:.1f}" for k in STAGES)
                print(f"| {video} | {name} | {r['frames']} | {r['fps']:.1f} | {stages} |", flush=True)
            if len(rows) == 2:
                print(f"| {video} | speed-up | | {rows[0][1]['fps'] / rows[1][1]['fps']:.2f}x | | | | |", flush=True)
    if ultra is None:
        print(f"(Ultralytics rows skipped: {why})")
    runtime_table(shared, a.threads, a.analysis_fps, a.limit, a.repeats)

    if a.skip_mae:
        return
    cam = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").camera("classroom")
    frames = [f for f, _ in analysed_frames(Path(str(cam.source)), cam.analysis_fps, 1000)]
    layout = Layout(cam, frames[0].shape[1], frames[0].shape[0])
    dev_tiles = DetectConfig(mode="tiled", conf=0.25, tiles=TileConfig(scale=2.0, overlap=0.2, full_frame=True))
    runs: list[tuple[str, Callable[[np.ndarray], Detections], Callable[[np.ndarray], Detections] | None]] = [
        ("Turnout full 640, conf 0.25", lambda f: det.detect(f, full), None),
        (
            "Turnout tiled (dev: 2x + full frame, conf 0.25; classroom: its config)",
            lambda f: dyn.detect(f, dev_tiles),
            lambda f: dyn.detect(f, cam.detect),
        ),
    ]
    if ultra is not None:
        runs += [
            ("Ultralytics predictor 640, conf 0.25", ultra_counter(ultra, 640), None),
            ("Ultralytics predictor 1280 (dyn ONNX), conf 0.25", ultra_counter(ultra_dyn, 1280), None),
        ]
    print("\n## Person-count MAE (dev_people_capston2: boxes vs counts.csv; classroom: seated in sections vs 14)")
    print(f"| runner | dev_people_capston2 MAE ({109 // a.dev_every} imgs) | classroom MAE ({len(frames)} frames) |")
    print("|---|---|---|")
    for name, dev_fn, room_fn in runs:
        dev = dev_mae(shared, dev_fn, a.dev_every)
        room = classroom_mae(room_fn or dev_fn, frames, layout)
        print(f"| {name} | {dev:.2f} | {room:.2f} |")
    if ultra is None:
        print(f"(Ultralytics rows skipped: {why})")


if __name__ == "__main__":
    main()
