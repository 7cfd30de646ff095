"""Stream drop: a real RTSP stream (ffmpeg publishing into an RTSP server) stops and comes back.

ffmpeg cannot serve RTSP clients itself, so it pushes (ANNOUNCE/RECORD) into Debian's small
`rtsp-server-perl`, which serves the edge like an IP camera would. Both are installed by
`scripts/setup.sh test`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_listening, port_open
from tests.edge.conftest import turnout_cmd, vtest_config
from tests.edge.test_run_e2e import Recorder

pytestmark = pytest.mark.slow


class RtspCamera:
    """An RTSP server plus an ffmpeg publisher that can be stopped and restarted (the 'camera')."""

    def __init__(self, video: Path, workdir: Path) -> None:
        for tool in ("ffmpeg", "rtsp-server-perl"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} not installed: run scripts/setup.sh test")
        self.video = video
        self.workdir = workdir
        self.client_port, self.source_port = free_port(), free_port()
        rtp = 21000 + (self.client_port % 2000) * 10
        self.server = subprocess.Popen(
            ["rtsp-server-perl", "--clientport", str(self.client_port), "--serverport", str(self.source_port),
             "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
             "--rtp_start_port", str(rtp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.source_port):
            assert time.monotonic() < deadline, "rtsp-server-perl did not start"
            time.sleep(0.1)
        self.ffmpeg: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/live"

    def start(self) -> None:
        self.ffmpeg = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.video),
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10", "-an",
             "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/live"],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "ffmpeg.log", "ab"),  # noqa: SIM115
        )  # fmt: skip

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the server describes the stream (the publisher is streaming): RTSP DESCRIBE answers 200."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=2) as conn:
                    conn.sendall(request)
                    if conn.recv(64).startswith(b"RTSP/1.0 200"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"RTSP stream {self.url} not ready after {timeout} s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.ffmpeg:  # SIGTERM: ffmpeg sends TEARDOWN, so the server accepts it again on restart
            self.ffmpeg.terminate()
            self.ffmpeg.wait()
            self.ffmpeg = None

    def close(self) -> None:
        self.stop()
        self.server.kill()
        self.server.wait()


def wait_for(predicate, timeout: float, step: float = 0.1) -> float:
    """Seconds until `predicate()` held; fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


@dataclass
class EdgeOnRtsp:
    """`turnout edge run` reading an RTSP camera, and what it published (statuses, occupancy)."""

    camera: RtspCamera
    sub: Recorder
    edge: subprocess.Popen[bytes]
    log: Path

    def statuses(self) -> list[dict]:
        return [json.loads(raw) for raw in self.sub.messages["status"]]

    def states(self) -> list[str]:
        return [s["state"] for s in self.statuses()]

    def occupancy_count(self) -> int:
        return len(self.sub.messages["occupancy"])


@contextmanager
def edge_on_rtsp(shared, tmp_path, write_config, broker, venue_id, **camera_cfg: object) -> Iterator[EdgeOnRtsp]:
    """An RTSP camera on vtest.avi and a real edge on it (RTP over UDP); all stopped on leaving."""
    camera = RtspCamera(shared / "data/videos/vtest.avi", tmp_path)
    camera.start()
    cfg = vtest_config(shared, venue_id, broker.url, tmp_path / "state",
                       source=camera.url, rtsp_transport="udp", **camera_cfg)  # fmt: skip
    sub = Recorder(broker.host, broker.port, venue_id)
    log = tmp_path / "edge.log"
    edge_log = log.open("wb")
    edge = subprocess.Popen(turnout_cmd("edge", "run", "--config", str(write_config(cfg))),
                            stdout=subprocess.DEVNULL, stderr=edge_log)  # fmt: skip
    try:
        yield EdgeOnRtsp(camera, sub, edge, log)
    finally:
        edge.terminate()
        edge.wait(20)
        edge_log.close()
        sub.close()
        camera.close()


def test_rtsp_drop_reconnects_and_reports_degraded(shared, tmp_path, write_config, system_broker, venue_id) -> None:
    with edge_on_rtsp(shared, tmp_path, write_config, system_broker, venue_id, analysis_fps=2) as run:
        wait_for(lambda: run.occupancy_count() >= 3, 40)
        assert run.states()[-1] == "online"
        run.camera.stop()
        drop_at = time.monotonic()
        wait_for(lambda: run.states()[-1] == "degraded", 20)
        degraded_after = time.monotonic() - drop_at
        before = run.occupancy_count()
        time.sleep(3)
        assert run.occupancy_count() - before <= 1, "no counts while the stream is down"
        run.camera.start()
        reconnect_s = wait_for(lambda: run.states()[-1] == "online" and run.occupancy_count() > before + 1, 10)
        print(f"degraded after {degraded_after:.1f} s; reconnected {reconnect_s:.1f} s after the stream came back")
    log = run.log.read_text()
    assert "reconnecting" in log or "retry in" in log
    assert run.edge.returncode == 0


def test_http_mjpeg_source(shared, tmp_path, write_config, system_broker, venue_id) -> None:
    """An HTTP multipart-JPEG stream (as served by many IP cameras), here served by ffmpeg itself."""
    port = free_port()
    server = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(shared / "data/videos/vtest.avi"), "-an", "-c:v", "mjpeg", "-q:v", "5",
         "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/feed.mjpg"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert port_listening(port), "ffmpeg did not start listening"  # serves one client: never connect to probe
        cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state",
                           source=f"http://127.0.0.1:{port}/feed.mjpg")  # fmt: skip
        result = subprocess.run(turnout_cmd("edge", "check", "--config", str(write_config(cfg))),
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "camera   plaza-cam: http 480x360" in result.stdout
