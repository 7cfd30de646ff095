"""Decode cost per 4K camera: keyframe-only vs full decoding, over RTSP, at 0.5 analyses per second.

A 4K (3840x2160) 25 fps H.264 clip with a keyframe every 2 s is made from a shared video with ffmpeg
(libx264 ``--preset``, default veryfast), published in a loop without re-encoding (``-c copy``) into
rtsp-server-perl (as in tests/edge/test_stream_drop.py), and read by Turnout's real `FrameSource` in a
child process for ``--seconds`` per mode. The child's CPU time (user + system, all its threads: demux,
decode, scaling to BGR) divided by the wall time is the share of a core one camera costs for decoding
(no detection). Prints a table; figures in docs/benchmarks.md.

    TURNOUT_SHARED=../shared .venv/bin/python benchmarks/bench_decode.py [--seconds 20] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from turnout.paths import REPO_ROOT, shared_dir


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(video: Path, out: Path, seconds: float, preset: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-t", str(seconds), "-i", str(video),
         "-vf", "scale=3840:2160", "-r", "25", "-c:v", "libx264", "-preset", preset, "-g", "50",
         "-keyint_min", "50", "-sc_threshold", "0", "-an", str(out)],
        check=True,
    )  # fmt: skip


def child(url: str, keyframe_only: bool, seconds: float, transport: str) -> None:
    """Read the stream with FrameSource for `seconds`; print CPU seconds, wall seconds and counters."""
    from edge.config import CameraConfig
    from edge.sources import FrameSource

    cam = CameraConfig.model_validate(
        {"id": "bench", "source": url, "analysis_fps": 0.5, "keyframe_only": keyframe_only,
         "rtsp_transport": transport, "sections": [{"id": "a", "seats": 1, "polygon": [[0, 0], [1, 0], [1, 1]]}]}
    )  # fmt: skip
    stop = threading.Event()
    src = FrameSource(cam, stop)
    frames = src.frames()
    next(frames)  # connected, first keyframe analysed: measure from here
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    g0, f0, d0 = src.grabbed, src.fed, src.decoded
    threading.Timer(seconds, stop.set).start()
    for _ in frames:
        pass
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    info = src.decode_info
    print(json.dumps({
        "cpu": cpu, "wall": wall, "packets": src.grabbed - g0, "fed": src.fed - f0, "analysed": src.decoded - d0,
        "mode": info.mode if info else None, "interval": info.keyframe_interval_s if info else None,
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per mode")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--preset", default="veryfast", help="libx264 preset of the generated 4K clip")
    ap.add_argument("--transport", default="udp", choices=("tcp", "udp"), help="rtsp-server-perl serves UDP only")
    ap.add_argument("--cores", type=int, default=2, help="cores of the box, for the cameras-per-box column")
    ap.add_argument("--child", nargs=3, metavar=("URL", "KEYFRAME_ONLY", "SECONDS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1] == "1", float(a.child[2]), a.transport)
        return
    shared = shared_dir()
    if shared is None:
        raise SystemExit("set TURNOUT_SHARED to the shared/ folder")
    for tool in ("ffmpeg", "rtsp-server-perl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not installed: run scripts/setup.sh test")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "crowd4k.mp4"
        make_clip(shared / "data/videos/crowd_topdown_1280x720.mp4", clip, a.clip_seconds, a.preset)
        client, source = free_port(), free_port()
        server = subprocess.Popen(
            ["rtsp-server-perl", "--clientport", str(client), "--serverport", str(source),
             "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
             "--rtp_start_port", str(23000 + (client % 1000) * 10)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.5)
        publisher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
             "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{source}/live"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2.0)
        url = f"rtsp://127.0.0.1:{client}/live"
        rows = {}
        try:
            for label, flag in (("full decoding", "0"), ("keyframes only", "1")):
                out = subprocess.run(
                    [sys.executable, __file__, "--transport", a.transport, "--child", url, flag, str(a.seconds)],
                    capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                    timeout=a.seconds + 120,
                )
                if out.returncode != 0:
                    raise SystemExit(f"{label}: child failed:\n{out.stderr[-2000:]}")
                rows[label] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            publisher.terminate()
            publisher.wait()
            server.kill()
            server.wait()
    print(f"## Decode CPU per 4K25 H.264 camera (RTSP/{a.transport.upper()}, keyframe every 2 s, "
          f"libx264 {a.preset}, analysis 0.5 fps, {a.seconds:g} s each)")  # fmt: skip
    print("| decoding | mode reported | keyframe interval (s) | packets | decoded packets | analysed frames | "
          f"CPU s | cores per camera | cameras per {a.cores}-core box (decode only) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        cores = r["cpu"] / r["wall"]
        print(f"| {label} | {r['mode']} | {r['interval']} | {r['packets']} | {r['fed']} | {r['analysed']} | "
              f"{r['cpu']:.2f} | {cores:.3f} | {int(a.cores / cores) if cores else 'inf'} |")  # fmt: skip
    full, key = rows["full decoding"], rows["keyframes only"]
    ratio = (full["cpu"] / full["wall"]) / max(1e-9, key["cpu"] / key["wall"])
    verdict = "met" if key["cpu"] / key["wall"] <= 0.05 else "NOT met"
    print(f"\nkeyframes only uses {ratio:.1f}x less CPU; target <= 0.05 core per camera: {verdict}")


if __name__ == "__main__":
    main()
