"""Keyframe-only decoding on live sources: RTSP drop and reconnect (through `turnout edge run`), RTSP and
HTTP multipart JPEG (in process). The RTSP camera is the one of test_stream_drop.py: ffmpeg publishing
vtest.avi (10 fps, a keyframe every 10 frames = 1 s) into rtsp-server-perl, which serves RTP over UDP only
(it answers RTP-over-TCP requests with 400), so `rtsp_transport: tcp` is passed to FFmpeg but not tested here.
"""

from __future__ import annotations

import subprocess
import threading
from itertools import islice

import pytest

from edge.config import CameraConfig
from edge.sources import FrameSource
from tests.conftest import free_port, port_listening
from tests.edge.test_stream_drop import RtspCamera, edge_on_rtsp, wait_for

pytestmark = pytest.mark.slow


def test_rtsp_keyframes_only_drop_and_reconnect(shared, tmp_path, write_config, system_broker, venue_id) -> None:
    with edge_on_rtsp(
        shared, tmp_path, write_config, system_broker, venue_id, analysis_fps=1, hysteresis={"window": 1}
    ) as run:

        def keyframe_mode() -> bool:
            last = run.statuses()[-1] if run.statuses() else {}
            return last.get("state") == "online" and last.get("decode", {}).get("mode") == "keyframes"

        wait_for(lambda: run.occupancy_count() >= 2 and keyframe_mode(), 40)
        decode = run.statuses()[-1]["decode"]
        assert decode["decoder"] in ("cpu", "vaapi", "nvdec", "v4l2m2m")
        assert decode["keyframe_interval_s"] == pytest.approx(1.0, abs=0.15)  # -g 10 at 10 fps
        run.camera.stop()
        wait_for(lambda: run.states()[-1] == "degraded", 20)
        before = run.occupancy_count()
        run.camera.start()
        wait_for(lambda: keyframe_mode() and run.occupancy_count() > before + 1, 20)
    log = run.log.read_text()
    assert "reconnecting" in log or "retry in" in log
    assert "keyframes every" not in log  # 1 s keyframes for 1 s analysis: never judged too rare
    assert run.edge.returncode == 0


def _source(source: str, **kw: object) -> FrameSource:
    cam = CameraConfig.model_validate(
        {"id": "cam", "source": source, "sections": [{"id": "a", "seats": 1, "polygon": [[0, 0], [1, 0], [1, 1]]}], **kw}
    )
    return FrameSource(cam, threading.Event())


def test_rtsp_udp_decodes_only_analysed_keyframes(shared, tmp_path) -> None:
    camera = RtspCamera(shared / "data/videos/vtest.avi", tmp_path)
    camera.start()
    src = _source(camera.url, rtsp_transport="udp", analysis_fps=1)
    try:
        camera.wait_ready()
        frames = list(islice(src.frames(), 4))
    finally:
        src.stop.set()
        camera.close()
    assert len(frames) == 4 and frames[0].image.shape == (360, 480, 3)
    assert src.decode_info is not None and src.decode_info.mode == "keyframes"
    assert src.fed == 4  # only the analysed keyframes were decoded ...
    assert src.grabbed >= 25  # ... out of every packet demuxed (10 per second)


def test_http_mjpeg_decodes_only_analysed_frames(shared) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(shared / "data/videos/vtest.avi"), "-an", "-c:v", "mjpeg", "-q:v", "5",
         "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/feed.mjpg"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    src = _source(f"http://127.0.0.1:{port}/feed.mjpg", analysis_fps=2)
    try:
        assert port_listening(port), "ffmpeg did not start listening"  # serves one client: never connect to probe
        frames = list(islice(src.frames(), 4))
    finally:
        src.stop.set()
        server.kill()
        server.wait()
    assert len(frames) == 4 and frames[0].image.shape == (360, 480, 3)
    assert src.decode_info is not None and src.decode_info.mode == "keyframes"  # every JPEG is a keyframe
    assert src.fed == 4 and src.grabbed >= 12  # 10 JPEGs a second arrive, 2 a second are decoded
