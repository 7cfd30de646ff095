"""Static-scene gating on the classroom clip: tiles run vs reused, and the count error, with gating off and on.

deploy/edge-classroom.yaml as shipped (6 tiles at scale 2, ROI on), every analysis frame of the 11 s clip at
``--fps`` (frame times from the video), people counted in the sections vs the 14 seated students (raw, before
smoothing). Gating off, at its default threshold, and at looser thresholds, side by side in one run:

    .venv/bin/python benchmarks/bench_gating.py
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from edge.config import GateConfig, load_config
from edge.detector import Detector
from edge.gating import TileGate
from edge.zones import Layout
from turnout.paths import REPO_ROOT, shared_dir

TRUE_COUNT = 14


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=2.0, help="analyses per second of video")
    ap.add_argument("--thresholds", default="0.01,0.02,0.03", help="gate thresholds besides 'off'")
    args = ap.parse_args()
    cam = load_config(REPO_ROOT / "deploy/edge-classroom.yaml").camera("classroom")
    det = Detector(shared_dir() / "models/yolo11n-recon-dyn.onnx", threads=2, max_batch=4)
    cap = cv2.VideoCapture(str(cam.source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    step = max(1, round(fps / args.fps))
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append((i / fps, frame))
        i += 1
    layout = Layout(cam, *frames[0][1].shape[1::-1])
    print(f"classroom clip: {len(frames)} analyses at {args.fps:g}/s of video, 6 tiles each (scale 2, ROI on), "
          f"raw people in sections vs {TRUE_COUNT}; refresh_s 30 (the clip is 11 s)")
    print(f"{'gating':>16} {'tiles run':>9} {'reused':>6} {'MAE':>5} {'max err':>7} {'CPU ms/frame':>12}")
    for label in ["off", *args.thresholds.split(",")]:
        gate = None if label == "off" else TileGate(GateConfig(enabled=True, threshold=float(label)))
        run = reused = 0
        errors = []
        t0 = time.process_time()
        for t, frame in frames:
            dets = det.detect(frame, cam.detect, roi=layout.region(), gate=gate, now=t)
            run += int(det.last_timing["tiles"])
            reused += int(det.last_timing.get("tiles_reused", 0))
            errors.append(sum(v.people for v in layout.count(dets).values()) - TRUE_COUNT)
        cpu = (time.process_time() - t0) / len(frames) * 1e3
        name = "off" if gate is None else f"threshold {label}"
        err = np.abs(errors)
        print(f"{name:>16} {run:9d} {reused:6d} {err.mean():5.2f} {err.max():7d} {cpu:12.0f}")


if __name__ == "__main__":
    main()
