"""Peak memory (RSS) of the whole `turnout edge run` process for a 1080p seated camera at tile scale 3.

The classroom clip (deploy/edge-classroom.yaml) is enlarged 3x to 1920x1056 and its sections with it; the
camera is tiled at scale 3 (213-pixel source tiles, 84 of them), gating off so every analysis runs every
tile. One real edge process per ``model.max_batch`` value (publishing to the local broker), run one after
the other; its peak RSS is read from the kernel (``os.wait4`` ru_maxrss), with its seconds per analysed frame.

    .venv/bin/python benchmarks/bench_memory.py            # max_batch: null (all tiles in one call), 16, 8, 4, 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import yaml

from turnout.paths import REPO_ROOT, shared_dir

SCALE_UP = 3  # 640x352 -> 1920x1056


def make_video(src: Path, out: Path, seconds: float) -> tuple[int, int]:
    """The first ``seconds`` of ``src`` enlarged SCALE_UP times (INTER_CUBIC), as an MJPEG .avi."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 20.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) * SCALE_UP, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) * SCALE_UP
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(round(fps * seconds)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC))
    writer.release()
    cap.release()
    return w, h


def edge_config(video: Path, tmp: Path, max_batch: int | None, fps: float) -> Path:
    """deploy/edge-classroom.yaml on the enlarged video: sections x3, tiles at scale 3, gating off."""
    data = yaml.safe_load((REPO_ROOT / "deploy/edge-classroom.yaml").read_text())
    cam = data["cameras"][0]
    for sec in cam["sections"]:
        sec["polygon"] = [[x * SCALE_UP, y * SCALE_UP] for x, y in sec["polygon"]]
    cam["exclude"] = [[[x * SCALE_UP, y * SCALE_UP] for x, y in a] for a in cam["exclude"]]
    cam.update(source=str(video), loop=False, realtime=False, analysis_fps=fps)
    cam["detect"]["tiles"]["scale"] = 3.0
    cam["detect"]["gate"] = {"enabled": False}
    cam.pop("calibration", None)
    data["model"] = {"path": str(shared_dir() / "models/yolo11n-recon-dyn.onnx"), "threads": 2, "max_batch": max_batch}
    data["state_dir"] = str(tmp / f"state-{max_batch}")
    data["status_interval_s"] = 1000
    path = tmp / f"edge-{max_batch}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_edge(config: Path) -> tuple[float, float, int]:
    """Run the edge until the video ends: (peak RSS MB, wall s, frames analysed)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnout.cli", "edge", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edge run failed ({proc.returncode}):\n{out[-2000:]}")
    frames = [int(m) for m in re.findall(r"frames[= ](\d+)", out)]
    return usage.ru_maxrss / 1024, wall, max(frames, default=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="none,16,8,4,1", help="max_batch values; none = all tiles in one call")
    ap.add_argument("--seconds", type=float, default=2.0, help="video length (analysed at --fps)")
    ap.add_argument("--fps", type=float, default=1.0, help="analysis_fps")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        video = tmp / "classroom-1080p.avi"
        w, h = make_video(shared_dir() / "data/videos/classroom_cctv_fixed_640x352_11s.mp4", video, args.seconds)
        from edge.config import TileConfig
        from edge.tiling import tile_windows

        tiles = len(tile_windows(w, h, TileConfig(size=640, scale=3.0, overlap=0.25)))
        frames = round(args.seconds * args.fps)
        print(f"1080p seated camera: {w}x{h}, tiles at scale 3: {tiles} per frame, {frames} analysed frames, "
              f"yolo11n-recon-dyn onnxruntime fp32, 2 threads; {os.cpu_count()} CPUs shared with other users")
        print(f"{'max_batch':>10} {'peak RSS MB':>12} {'wall s':>8}")
        for value in args.batches.split(","):
            mb = None if value.strip().lower() in ("none", "null") else int(value)
            rss, wall, _ = run_edge(edge_config(video, tmp, mb, args.fps))
            print(f"{mb!s:>10} {rss:12.0f} {wall:8.1f}")


if __name__ == "__main__":
    main()
