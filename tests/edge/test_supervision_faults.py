"""Edge supervision with real injected faults: a capture stage that crashes, a detector that throws, a full disk.

Each test runs the real pipeline (`EdgeRunner`: real video, real detector, real broker at 127.0.0.1:1883 with a
unique venue) and injects the fault by replacing one method, or by filling a real (tmpfs) filesystem.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import EdgeConfig, parse_config
from edge.detector import Detector
from edge.pipeline import EdgeRunner
from edge.sources import FrameSource
from tests.edge.conftest import vtest_config
from tests.edge.mqtt_tools import Recorder


@pytest.fixture(scope="module")
def detector(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon.onnx", threads=1)


def config(shared: Path, venue: str, url: str, state: Path) -> EdgeConfig:
    """vtest.avi at 4 analysed frames/s, counts published as soon as they are known (window 1, every 0.5 s)."""
    return parse_config(vtest_config(shared, venue, url, state, analysis_fps=4, hysteresis={"window": 1}))


class Running:
    """An EdgeRunner in a background thread, plus an independent subscriber to its camera's topics."""

    def __init__(self, cfg: EdgeConfig, detector: Detector, broker) -> None:
        self.broker = broker
        self.rec = Recorder(broker.host, broker.port, f"turnout/v1/{cfg.venue}/#")
        self.runner = EdgeRunner(cfg, detector)
        self.worker = self.runner.workers[0]
        self.thread = threading.Thread(target=self.runner.run, kwargs={"duration": 90}, daemon=True)
        self.thread.start()

    def statuses(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.rec.on("/status") if m.payload]

    def occupancy(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.rec.on("/occupancy")]

    def wait(self, predicate, timeout: float, what: str) -> None:
        assert self.rec.wait_for(lambda _r: predicate(), timeout), f"{what} within {timeout} s; status: " + str(
            [(s["state"], s.get("reason")) for s in self.statuses()][-6:]
        )

    def close(self) -> None:
        self.runner.stop.set()
        self.thread.join(30)
        self.rec.barrier()  # the runner's last statuses (acknowledged before it stopped) have arrived
        self.rec.close()
        _clear_retained(self.broker.host, self.broker.port, {m.topic for m in self.rec.on("/status")})


def _clear_retained(host: str, port: int, topics: set[str]) -> None:
    """Leave nothing retained on the shared broker (an empty retained payload deletes it)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def cleared(status: dict) -> bool:
    """The camera reports no fault: online, or only ``degraded: overloaded`` (a busy machine analyses fewer frames
    than analysis_fps asks for; that is not the injected fault)."""
    return status["state"] == "online" or (status.get("reason") or "").startswith("overloaded")


def recovered_after(statuses: list[dict], reason_part: str) -> bool:
    """A degraded status naming the reason, followed later by one without a fault."""
    idx = [i for i, s in enumerate(statuses) if s["state"] == "degraded" and reason_part in (s.get("reason") or "")]
    return bool(idx) and any(cleared(s) for s in statuses[idx[-1] + 1 :])


def test_capture_crash_restarts_the_stage_with_backoff(shared, tmp_path, detector, system_broker, venue_id,
                                                        monkeypatch) -> None:  # fmt: skip
    """The source raises RuntimeError on its 6th and 10th frame: capture restarts after 0.5 s then 1 s (two
    failures in a row), the status says why, and counting resumes."""
    fail_at, failed, resumed, yielded = {6, 10}, [], [], [0]
    original = FrameSource._read_file

    def faulty(self: FrameSource, cap) -> Iterator:
        inner = original(self, cap)
        while True:
            try:
                frame = next(inner)
            except StopIteration as end:
                return end.value
            yielded[0] += 1
            if yielded[0] in fail_at:
                failed.append(time.monotonic())
                raise RuntimeError(f"injected decoder crash at frame {yielded[0]}")
            if len(resumed) < len(failed):
                resumed.append(time.monotonic())
            yield frame

    monkeypatch.setattr(FrameSource, "_read_file", faulty)
    run = Running(config(shared, venue_id, system_broker.url, tmp_path / "state"), detector, system_broker)
    try:
        run.wait(lambda: len(resumed) == 2 and len(run.occupancy()) >= 3, 40, "two restarts")
        run.wait(lambda: recovered_after(run.statuses(), "capture failed: RuntimeError: injected decoder crash"),
                 20, "degraded with the reason, then online")  # fmt: skip
        before = len(run.occupancy())
        run.wait(lambda: len(run.occupancy()) >= before + 3, 20, "counting after the restarts")
        assert run.worker.stats.restarts["capture"] == 2 and all(t.is_alive() for t in run.worker._threads)
    finally:
        run.close()
    gaps = [r - f for f, r in zip(failed, resumed, strict=True)]
    print(f"capture restarted after {gaps[0]:.2f} s and {gaps[1]:.2f} s")
    assert 0.5 <= gaps[0] < 2.0 and 1.0 <= gaps[1] < 3.0, gaps
    reasons = [s.get("reason") or "" for s in run.statuses() if s["state"] == "degraded"]
    assert any("frame 6" in r and "restarting in 0.5 s" in r for r in reasons), reasons
    assert any("frame 10" in r and "restarting in 1.0 s" in r for r in reasons), reasons


def test_detector_exception_restarts_the_stage_with_backoff(shared, tmp_path, detector, system_broker, venue_id,
                                                             monkeypatch) -> None:  # fmt: skip
    """The detector raises RuntimeError on calls 5, 6 and 7: the stage pauses 0.5, 1 and 2 s, reports degraded
    with the reason, and goes back online when detection works again."""
    calls: list[float] = []
    real_detect = detector.detect

    def flaky(frame, cfg, **kw):
        calls.append(time.monotonic())
        if len(calls) in (5, 6, 7):
            raise RuntimeError(f"injected onnxruntime failure {len(calls)}")
        return real_detect(frame, cfg, **kw)

    monkeypatch.setattr(detector, "detect", flaky)
    run = Running(config(shared, venue_id, system_broker.url, tmp_path / "state"), detector, system_broker)
    try:
        run.wait(lambda: len(calls) >= 8, 40, "detection after three failures")
        run.wait(lambda: recovered_after(run.statuses(), "analysis failed: RuntimeError: injected onnxruntime"),
                 20, "degraded with the reason, then online")  # fmt: skip
        before = len(run.occupancy())
        run.wait(lambda: len(run.occupancy()) >= before + 3, 20, "counting after the failures")
        assert run.worker.stats.restarts["detect"] == 3 and run.worker.stats.failures == 3
        assert cleared({"state": run.worker.stats.state.value, "reason": run.worker.stats.error})
    finally:
        run.close()
    pauses = [calls[i + 1] - calls[i] for i in (4, 5, 6)]
    print("detect stage paused " + ", ".join(f"{p:.2f}" for p in pauses) + " s")
    assert 0.5 <= pauses[0] < 1.5 and 1.0 <= pauses[1] < 2.5 and 2.0 <= pauses[2] < 4.0, pauses
    reasons = [s.get("reason") or "" for s in run.statuses() if s["state"] == "degraded"]
    assert any("failure 7" in r and "restarting in 2.0 s" in r for r in reasons), reasons


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) that the test can fill up."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a small tmpfs, and mounting one needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> int:
    """Write to `path` until the filesystem is full; return the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512):
            while True:
                try:
                    written += fh.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return written


def test_counts_lost_on_a_full_disk_are_counted_as_dropped(shared, tmp_path, tiny_fs, detector, system_broker,
                                                           venue_id) -> None:  # fmt: skip
    run = Running(config(shared, venue_id, system_broker.url, tiny_fs / "state"), detector, system_broker)
    filler = tiny_fs / "filler"
    try:
        run.wait(lambda: len(run.occupancy()) >= 3, 30, "counts before the disk fills")
        fill(filler)
        run.wait(lambda: run.worker.stats.unstored >= 4, 20, "counts dropped on the full disk")
        run.wait(lambda: any("counts not stored" in (s.get("reason") or "") for s in run.statuses()), 10,
                 "degraded: counts not stored")  # fmt: skip
        assert run.worker.stats.state.value == "degraded"
        seen = {m["seq"] for m in run.occupancy()}
        filler.unlink()
        lost = run.worker.stats.unstored
        run.wait(lambda: any(m["seq"] not in seen for m in run.occupancy()), 20, "counts after space is back")
        run.wait(lambda: cleared(run.statuses()[-1]), 10, "the store error cleared from the status")
    finally:
        if filler.exists():
            filler.unlink()
        run.close()
    after = [m for m in run.occupancy() if m["seq"] not in seen]
    dropped = {m["processing"]["dropped"] for m in after}
    reason = next(s["reason"] for s in run.statuses() if "counts not stored" in (s.get("reason") or ""))
    print(f"{lost} counts dropped while the disk was full ({reason}); processing.dropped afterwards: {sorted(dropped)}")
    # every message after the disk came back reports exactly the counts lost (the queue bound dropped none)
    assert lost >= 4 and run.worker.stats.unstored == lost and dropped == {lost}, (lost, dropped)
