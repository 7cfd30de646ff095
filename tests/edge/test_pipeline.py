"""The detect stage survives a bad frame: the camera reports degraded, then counts again."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge.config import parse_config
from edge.detector import Detector
from edge.pipeline import _STOP, CameraWorker
from edge.sources import Frame
from tests.edge.conftest import vtest_config
from tests.edge.test_run_e2e import Recorder


def test_bad_frame_degrades_then_recovers(shared: Path, tmp_path: Path, system_broker, venue_id: str) -> None:
    cfg = parse_config(vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", realtime=False))
    cfg.cameras[0].hysteresis.window = 1
    detector = Detector(shared / "models/yolo11n-recon.onnx", threads=1)
    cap = cv2.VideoCapture(str(shared / "data/videos/vtest.avi"))
    good = [cap.read()[1] for _ in range(3)]
    cap.release()
    sub = Recorder(system_broker.host, system_broker.port, venue_id)
    stop = threading.Event()
    worker = CameraWorker(cfg, cfg.cameras[0], detector, stop)
    worker.publisher.start()
    detect = threading.Thread(target=worker._detect, daemon=True)
    detect.start()

    def feed(image: np.ndarray) -> None:
        worker._frames.put(Frame(image, datetime.now(UTC), 0, time.monotonic()))

    try:
        feed(good[0])
        feed(np.zeros((360, 480), np.uint8))  # a broken frame: one channel instead of three
        deadline = time.monotonic() + 20
        while worker.stats.failures == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.stats.failures == 1 and worker.stats.state.value == "degraded"
        assert "analysis failed" in (worker.stats.error or "")
        feed(good[1])
        feed(good[2])
        worker._frames.put(_STOP)
        detect.join(30)
        assert not detect.is_alive()
        assert worker.stats.frames == 3 and worker.stats.state.value == "online"
    finally:
        worker.close()  # its publisher's last status is acknowledged by the broker ...
        sub.close()  # ... and so has arrived here (the recorder waits for everything queued for it)
    states = [json.loads(raw)["state"] for raw in sub.messages["status"]]
    assert "degraded" in states and states.index("degraded") < len(states) - 1 - states[::-1].index("online")
    assert len(sub.messages["occupancy"]) >= 1  # counting resumed after the bad frame
