"""One inference scheduler per device: a camera asking the impossible neither starves the others nor hides it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from edge.config import parse_config
from edge.detector import Detector, letterbox, to_blob
from edge.pipeline import EdgeRunner
from edge.scheduler import InferenceScheduler, _Call
from tests.edge.conftest import vtest_config
from tests.edge.test_run_e2e import Recorder


def test_impossible_camera_is_overloaded_and_the_other_keeps_its_rate(
    shared: Path, tmp_path: Path, system_broker, venue_id: str
) -> None:
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", analysis_fps=2, detect={"mode": "full"})
    cfg["model"] = {"path": str(shared / "models/yolo11n-recon-dyn.onnx"), "threads": 2, "max_batch": 4}
    cfg["cameras"].append(
        {
            "id": "hall-cam",  # 1280x720 at 25 fps, 15 tiles a frame, 25 analyses/s asked: impossible on 2 cores
            "source": str(shared / "data/videos/crowd_topdown_1280x720.mp4"),
            "analysis_fps": 25,
            "detect": {"mode": "tiled", "tiles": {"size": 320, "scale": 1.0, "overlap": 0.2}},
            "sections": [{"id": "hall", "seats": 100, "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]]}],
        }
    )
    edge = parse_config(cfg)
    detector = Detector.from_config(shared / "models/yolo11n-recon-dyn.onnx", edge.model)
    scheduler = detector.start_scheduler()  # the runner uses (and at the end stops) this one
    sub = Recorder(system_broker.host, system_broker.port, venue_id)
    runner = EdgeRunner(edge, detector)
    try:
        runner.run(duration=9)
    finally:
        sub.close()
    plaza, hall = runner.workers
    assert plaza.stats.frames >= 12 and plaza.stats.fps >= 0.8 * 2  # its 2 analyses/s are honoured
    assert plaza.stats.state.value == "online" and plaza.stats.error is None
    assert hall.stats.frames >= 5  # the greedy camera is served too, at the rate that is left
    assert re.fullmatch(r"overloaded: \d+\.\d\d of 25 analyses/s", hall.stats.error or ""), hall.stats.error
    achieved = float(hall.stats.error.split()[1])
    assert achieved == round(hall.stats.fps, 2) and achieved < 20
    assert scheduler.requests >= plaza.stats.frames + hall.stats.frames * 4  # every call went through the queue
    statuses = [json.loads(raw) for raw in sub.messages["status"]]
    degraded = [s for s in statuses if s.get("camera") == "hall-cam" and s["state"] == "degraded"]
    assert any("overloaded" in (s.get("reason") or s.get("error") or "") for s in degraded), degraded[-1:]
    plaza_states = [(s["state"], s.get("reason")) for s in statuses if s.get("camera") == "plaza-cam"]
    assert not any("overloaded" in (r or "") for _, r in plaza_states), plaza_states


def test_calls_of_several_cameras_join_when_they_fit(shared: Path) -> None:
    det = Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)
    cap = cv2.VideoCapture(str(shared / "data/videos/vtest.avi"))
    frame = cap.read()[1]
    cap.release()
    tiles = [letterbox(frame[y : y + 160, x : x + 160], (320, 320))[0] for x, y in ((0, 0), (160, 0), (320, 0))]
    a, b, c = to_blob(tiles[:2]), to_blob(tiles[2:]), to_blob([cv2.resize(frame, (480, 352))])
    sched = InferenceScheduler(det._infer, max_batch=4)
    calls = [_Call(a), _Call(c), _Call(b)]  # waiting together before the inference thread starts
    sched._queue.extend(calls)
    assert [len(group) for group in _groups(sched)] == [2, 1]  # a + b joined (3 tiles <= 4); c has another size
    sched._queue.extend(calls)
    sched.start()
    for call in calls:
        assert call.done.wait(30) and call.error is None
    assert (sched.requests, sched.calls) == (3, 2)
    for call, blob in zip(calls, (a, c, b), strict=True):
        np.testing.assert_allclose(call.out, det._infer(blob), rtol=1e-4, atol=1e-3)
    sched.close()


def _groups(sched: InferenceScheduler) -> list[list[_Call]]:
    out = []
    while sched._queue:
        out.append(sched.take())
    return out
