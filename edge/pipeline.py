"""The edge pipeline: capture -> detect -> count -> publish, one chain per camera.

Stages run in their own threads connected by small queues, so a slow stage never blocks a fast one:

    FrameSource (capture thread) --frames--> CameraWorker (detect+count thread) --> Publisher (spool + MQTT)

For live sources the frame queue keeps only the newest frame (a slow detector analyses the latest
picture, never a backlog); for video files played as fast as possible it blocks instead, so no frame
of the analysis schedule is lost. Only counts leave the device; images stay in memory for snapshots.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.config import CameraConfig, EdgeConfig
from edge.detections import Detections
from edge.detector import Detector
from edge.publisher import Publisher
from edge.sources import Frame, FrameSource, SourceError
from edge.zones import Layout, SectionSmoother, SectionTally
from turnout.contract import CameraState, Occupancy, Processing, SectionCount

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class CameraStats:
    frames: int = 0
    published: int = 0
    latency_ms: float = 0.0
    fps: float = 0.0
    state: CameraState = CameraState.DEGRADED
    error: str | None = None
    failures: int = 0
    sections: dict[str, SectionTally] = field(default_factory=dict)
    _times: deque[float] = field(default_factory=lambda: deque(maxlen=30))

    def tick(self, now: float) -> None:
        self.frames += 1
        self._times.append(now)
        if len(self._times) >= 2 and self._times[-1] > self._times[0]:
            self.fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])


class CameraWorker:
    """Runs one camera: its capture thread, its detect/count thread and its MQTT publisher."""

    def __init__(self, cfg: EdgeConfig, camera: CameraConfig, detector: Detector, stop: threading.Event):
        self.cfg = cfg
        self.camera = camera
        self.detector = detector
        self.stop = stop
        self.stats = CameraStats()
        self.publisher = Publisher(cfg.mqtt, venue=cfg.venue, camera=camera.id, state_dir=Path(cfg.state_dir))
        live = camera.source_kind != "file" or camera.realtime
        self._frames: queue.Queue[Frame | object] = queue.Queue(maxsize=1 if live else 4)
        self._live = live
        self._source = FrameSource(camera, stop, self._set_state)
        self._lock = threading.Lock()
        self._layout: Layout | None = None
        self._smoother = self._new_smoother(camera)
        self._latest: tuple[np.ndarray, Detections] | None = None
        self._last_sent: dict[str, tuple[int, int]] | None = None
        self._last_sent_at = 0.0
        self._threads: list[threading.Thread] = []
        self.done = threading.Event()
        self.commands = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.publisher.start()
        self._attach_commands()
        for name, target in (("capture", self._capture), ("detect", self._detect)):
            t = threading.Thread(target=target, name=f"{self.camera.id}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def close(self) -> None:
        self.publisher.stop()

    def _attach_commands(self) -> None:
        """Snapshot and layout commands from the server (edge/commands.py), when available."""
        try:
            from edge.commands import CommandHandler
        except ImportError:  # pragma: no cover - optional module
            return
        self.commands = CommandHandler(
            self.publisher,
            self.cfg.venue,
            self.camera.id,
            latest=self.latest,
            current_layout=lambda: self.camera,
            apply_layout=self.apply_layout,
        )
        self.commands.attach()

    # ------------------------------------------------------------------------------ state
    def _set_state(self, state: CameraState, reason: str | None) -> None:
        if state != self.stats.state or reason != self.stats.error:
            self.stats.state, self.stats.error = state, reason
            self.publisher.set_status(state, reason)

    def latest(self) -> tuple[np.ndarray, Detections] | None:
        with self._lock:
            return self._latest

    def apply_layout(self, camera: CameraConfig) -> None:
        """Swap in new sections/seats (validated by the caller); counting restarts from zero."""
        with self._lock:
            self.camera = camera
            self._layout = None
            self._smoother = self._new_smoother(camera)
        log.info("camera %s: new layout applied (%d sections)", camera.id, len(camera.sections))

    @staticmethod
    def _new_smoother(camera: CameraConfig) -> SectionSmoother:
        h = camera.hysteresis
        return SectionSmoother(window=h.window, seat_on=h.seat_on, seat_off=h.seat_off)

    # ------------------------------------------------------------------------------ stages
    def _capture(self) -> None:
        try:
            for frame in self._source.frames():
                if self._live:
                    with contextlib.suppress(queue.Empty):
                        self._frames.get_nowait()  # drop the stale frame: analyse the newest
                    self._frames.put(frame)
                else:
                    while not self.stop.is_set():
                        try:
                            self._frames.put(frame, timeout=0.2)
                            break
                        except queue.Full:
                            continue
        except SourceError as exc:
            log.error("%s", exc)
            self.stats.error = str(exc)
            self.publisher.set_status(CameraState.DEGRADED, str(exc))
        except Exception as exc:  # a broken decoder must not kill the device silently
            log.exception("camera %s: capture failed", self.camera.id)
            self.stats.error = f"capture failed: {exc}"
        finally:
            self._put_stop()

    def _put_stop(self) -> None:
        """Tell the detect stage the source has ended; never blocks on a queue nobody reads any more."""
        while True:
            try:
                self._frames.put(_STOP, timeout=0.2)
                return
            except queue.Full:
                if self.stop.is_set() or self.done.is_set():
                    with contextlib.suppress(queue.Empty):
                        while True:
                            self._frames.get_nowait()

    def _detect(self) -> None:
        try:
            while True:
                try:
                    item = self._frames.get(timeout=0.5)
                except queue.Empty:
                    if self.stop.is_set():
                        break
                    continue
                if item is _STOP:
                    break
                assert isinstance(item, Frame)
                try:
                    self._analyse(item)
                except Exception as exc:  # one bad frame must not stop the camera: report and go on
                    self._frame_failed(exc)
        finally:
            self.done.set()

    def _frame_failed(self, exc: Exception) -> None:
        self.stats.failures += 1
        reason = f"analysis failed: {type(exc).__name__}: {exc}"
        if self.stats.failures == 1 or self.stats.failures % 100 == 0:
            log.exception("camera %s: %s (%d frames so far)", self.camera.id, reason, self.stats.failures)
        self.stats.error = reason
        self._set_state(CameraState.DEGRADED, reason[:500])

    def _analyse(self, frame: Frame) -> None:
        with self._lock:
            camera = self.camera
            h, w = frame.image.shape[:2]
            if self._layout is None or self._layout.frame_size != (w, h):
                self._layout = Layout(camera, w, h)
            layout, smoother = self._layout, self._smoother
        dets = self.detector.detect(frame.image, camera.detect)
        tiles = int(self.detector.last_timing.get("tiles", 1))
        smoothed = smoother.update(layout.count(dets), layout)
        now = time.monotonic()
        with self._lock:
            self._latest = (frame.image, dets)
        self.stats.tick(now)
        self.stats.latency_ms = (now - frame.captured) * 1000.0
        self.stats.sections = smoothed
        if self.stats.state is not CameraState.ONLINE:
            self._set_state(CameraState.ONLINE, None)
        if smoother.warm and self._should_publish(smoothed, now):
            self._publish(frame, camera, smoothed, tiles)
            self._last_sent_at = now
            self._last_sent = {k: (v.occupied, v.people) for k, v in smoothed.items()}

    def _should_publish(self, sections: dict[str, SectionTally], now: float) -> bool:
        if self._last_sent is None or now - self._last_sent_at >= self.cfg.mqtt.interval_s:
            return True
        step = self.cfg.mqtt.min_change
        for sid, tally in sections.items():
            occ, ppl = self._last_sent.get(sid, (-step, -step))
            if abs(tally.occupied - occ) >= step or abs(tally.people - ppl) >= step:
                return True
        return False

    def _publish(self, frame: Frame, camera: CameraConfig, sections: dict[str, SectionTally], tiles: int) -> None:
        seats = {s.id: s.seats for s in camera.sections}
        msg = Occupancy(
            venue=self.cfg.venue,
            camera=camera.id,
            seq=self.publisher.next_seq(),
            ts=frame.ts,
            sections=[
                SectionCount(id=sid, seats=seats[sid], occupied=min(t.occupied, seats[sid]), people=t.people)
                for sid, t in sections.items()
            ],
            model=self.detector.name,
            processing=Processing(
                fps=round(self.stats.fps, 3),
                latency_ms=round(self.stats.latency_ms, 1),
                frames=self.stats.frames,
                tiles=max(1, tiles),
                dropped=self.publisher.stats.dropped,
            ),
        )
        self.publisher.publish_occupancy(msg)
        self.stats.published += 1


class EdgeRunner:
    """All cameras of one device, plus the periodic console status line."""

    def __init__(self, cfg: EdgeConfig, detector: Detector) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.workers = [CameraWorker(cfg, cam, detector, self.stop) for cam in cfg.cameras]

    def run(self, duration: float | None = None) -> int:
        """Run until `duration` elapses, `stop` is set, or every (non-looping) source has ended."""
        for w in self.workers:
            w.start()
        started = time.monotonic()
        next_status = started + self.cfg.status_interval_s
        try:
            while not self.stop.is_set():
                if duration is not None and time.monotonic() - started >= duration:
                    break
                if all(w.done.is_set() for w in self.workers):
                    break
                if time.monotonic() >= next_status:
                    log.info("%s", self.status_line())
                    next_status += self.cfg.status_interval_s
                self.stop.wait(0.1)
        finally:
            self.stop.set()
            for w in self.workers:
                w.join(10)
            log.info("%s", self.status_line())
            for w in self.workers:
                w.close()
        failed = [w for w in self.workers if w.stats.error and w.stats.frames == 0]
        return 1 if failed and len(failed) == len(self.workers) else 0

    def status_line(self) -> str:
        parts = []
        for w in self.workers:
            s = w.stats
            occ = sum(t.occupied for t in s.sections.values())
            seats = sum(sec.seats for sec in w.camera.sections)
            people = sum(t.people for t in s.sections.values())
            ps = w.publisher.stats
            mqtt = "up" if w.publisher.connected else "DOWN"
            parts.append(
                f"{w.camera.id}[{s.state.value}] {s.fps:.1f} fps {s.latency_ms:.0f} ms "
                f"occupied {occ}/{seats} people {people} | mqtt {mqtt} sent {ps.sent} queued {ps.queued} "
                f"dropped {ps.dropped}"
            )
        return "; ".join(parts)
