"""The edge pipeline: capture -> detect -> count -> publish, one chain per camera.

Stages run in their own threads connected by small queues, so a slow stage never blocks a fast one:

    FrameSource (capture thread) --frames--> CameraWorker (detect+count thread) --> Publisher (spool + MQTT)

For live sources the frame queue keeps only the newest frame (a slow detector analyses the latest
picture, never a backlog); for video files played as fast as possible it blocks instead, so no frame
of the analysis schedule is lost. Only counts leave the device; images stay in memory for snapshots.

Supervision: any exception in a camera's capture or detect stage (a decoder crash, an onnxruntime error, a
bad frame) restarts that stage after a pause that doubles with each failure in a row (0.5 s up to the
camera's ``reconnect_max_s``), and the camera's retained status turns ``degraded`` with the reason until a
frame is analysed again. Counts that cannot be stored for sending (disk full) are counted as dropped in
``processing.dropped`` and the camera reports ``degraded`` until storing works again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.config import CameraConfig, EdgeConfig
from edge.detections import Detections
from edge.detector import Detector
from edge.gating import TileGate
from edge.publisher import Publisher
from edge.seatref import AutoCapture, SeatFusion
from edge.sources import STABLE_S, Frame, FrameSource
from edge.zones import Layout, SectionSmoother, SectionTally
from turnout.contract import CameraState, Occupancy, Processing, SectionCount

if TYPE_CHECKING:
    from edge.avsource import DecodeInfo

log = logging.getLogger(__name__)

_STOP = object()
RESTART_MIN_S = 0.5
"""First pause before a failed stage is restarted; it doubles per failure in a row, up to reconnect_max_s."""
OVERLOAD_FRAMES = 5
"""Analyses before a camera's achieved rate is judged against its analysis_fps."""
OVERLOAD_RATIO = 0.8
"""A live camera analysing less than this share of its analysis_fps reports ``degraded: overloaded``."""


@dataclass
class CameraStats:
    frames: int = 0
    published: int = 0
    latency_ms: float = 0.0
    fps: float = 0.0
    state: CameraState = CameraState.DEGRADED
    error: str | None = None
    failures: int = 0  # frames whose analysis failed
    restarts: dict[str, int] = field(default_factory=lambda: {"capture": 0, "detect": 0})
    unstored: int = 0  # counts lost because the store-and-forward queue could not be written (disk full)
    tiles_run: int = 0  # detector passes (tiles, or 1 per full-frame analysis)
    tiles_skipped: int = 0  # tiles the detector reported as skipped (``tiles_skipped`` in its timing)
    tiles_reused: int = 0  # tiles that reused their last detections (static-scene gating, edge/gating.py)
    sections: dict[str, SectionTally] = field(default_factory=dict)
    stale: int = 0  # frames replaced in the queue before detection took them (detection slower than the source)
    _times: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    _stale_times: deque[float] = field(default_factory=lambda: deque(maxlen=30))

    def reset_rate(self) -> None:
        """Forget the analysis times (after a stage restart: a pause is not an overload)."""
        self._times.clear()
        self._stale_times.clear()

    def frame_went_stale(self, now: float) -> None:
        self.stale += 1
        self._stale_times.append(now)

    @property
    def detection_behind(self) -> bool:
        """Frames went stale in the window the rate is measured over: detection, not the source, sets the pace."""
        return bool(self._times and self._stale_times and self._stale_times[-1] >= self._times[0])

    @property
    def rate_samples(self) -> int:
        """Analyses in the window `fps` is measured over."""
        return len(self._times)

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
        self.publisher = Publisher(
            cfg.mqtt,
            venue=cfg.venue,
            camera=camera.id,
            state_dir=Path(cfg.state_dir),
            calibration=camera.calibration,
        )
        live = camera.source_kind != "file" or camera.realtime
        self._frames: queue.Queue[Frame | object] = queue.Queue(maxsize=1 if live else 4)
        self._live = live
        self._source = FrameSource(camera, stop, self._set_state, self._set_decode)
        self._lock = threading.Lock()
        self._layout: Layout | None = None
        self._smoother = self._new_smoother(camera)
        self._gate = self._new_gate(camera)
        self._fusion: SeatFusion | None = None  # empty-seat reference, loaded with the layout (edge/seatref.py)
        self._auto_reference = AutoCapture(Path(cfg.state_dir), camera)
        self._latest: tuple[np.ndarray, Detections] | None = None
        self._latest_size: tuple[int, int] | None = None
        self._last_sent: dict[str, tuple[int, int]] | None = None
        self._last_sent_at = 0.0
        self._store_error: str | None = None
        self._published: tuple[CameraState | None, str | None] = (None, None)  # last status: state, reason (kind)
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
    def _set_state(self, state: CameraState, reason: str | None, *, live_figures: bool = False) -> None:
        """Record the camera's state and publish it (retained) when it changed since the last status published.

        ``live_figures``: the reason carries a figure that moves every frame (an achieved rate, a count of
        dropped messages): a new status only when the state or the kind of reason (its text before the first
        ':') changes, not one per frame."""
        self.stats.state, self.stats.error = state, reason
        key = (state, reason.split(":", 1)[0] if live_figures and reason else reason)
        if key != self._published:
            self._published = key
            self.publisher.set_status(state, reason)

    def _set_decode(self, info: DecodeInfo) -> None:
        self.publisher.set_decode(info.status())

    def latest(self) -> tuple[np.ndarray, Detections] | None:
        """The latest analysed frame at the video's own size (decoder-scaled frames are enlarged back)."""
        with self._lock:
            latest, size = self._latest, self._latest_size
        if latest is None or size is None or latest[0].shape[1::-1] == size:
            return latest
        return cv2.resize(latest[0], size, interpolation=cv2.INTER_LINEAR), latest[1]

    def apply_layout(self, camera: CameraConfig) -> None:
        """Swap in new sections/seats (validated by the caller); counting restarts from zero."""
        with self._lock:
            self.camera = camera
            self._layout = None
            self._smoother = self._new_smoother(camera)
            self._gate = self._new_gate(camera)
            self._auto_reference.camera = camera  # the reference itself is reloaded with the layout
        log.info("camera %s: new layout applied (%d sections)", camera.id, len(camera.sections))

    @staticmethod
    def _new_smoother(camera: CameraConfig) -> SectionSmoother:
        h = camera.hysteresis
        return SectionSmoother(window=h.window, seat_on=h.seat_on, seat_off=h.seat_off)

    @staticmethod
    def _new_gate(camera: CameraConfig) -> TileGate | None:
        return TileGate(camera.detect.gate) if camera.gating else None

    # ------------------------------------------------------------------------------ stages
    def _pause(self, failures: int) -> float:
        """Pause before restarting a stage after `failures` failures in a row."""
        return min(self.camera.reconnect_max_s, RESTART_MIN_S * 2 ** (failures - 1))

    def _capture(self) -> None:
        """The capture stage, supervised: any exception restarts it (source reopened) after a growing pause."""
        failures = 0
        try:
            while not self.stop.is_set():
                started, delivered = time.monotonic(), 0
                try:
                    for frame in self._source.frames():
                        self._queue_frame(frame)
                        delivered += 1
                    return  # the source ended (a non-looping file) or the device is stopping
                except Exception as exc:  # SourceError, a decoder crash, ...: restart, never end the camera
                    if delivered and time.monotonic() - started >= STABLE_S:
                        failures = 0  # it had been running well: start the backoff again
                    failures += 1
                    pause = self._pause(failures)
                    self._stage_failed("capture", exc, pause, failures)
                    self.stats.restarts["capture"] += 1  # counted once the status says degraded
                    if self.stop.wait(pause):
                        return
        finally:
            self._put_stop()

    def _queue_frame(self, frame: Frame) -> None:
        if self._live:
            with contextlib.suppress(queue.Empty):
                self._frames.get_nowait()  # drop the stale frame: analyse the newest
                self.stats.frame_went_stale(time.monotonic())
            self._frames.put(frame)
            return
        while not self.stop.is_set():
            try:
                self._frames.put(frame, timeout=0.2)
                return
            except queue.Full:
                continue

    def _stage_failed(self, stage: str, exc: BaseException, pause: float, failures: int) -> None:
        """Report a failed stage: log (with the traceback the first time), status degraded with the reason."""
        what = "analysis" if stage == "detect" else stage
        reason = f"{what} failed: {type(exc).__name__}: {exc}"
        if failures == 1 or failures % 100 == 0:
            log.error("camera %s: %s; restarting in %.1f s", self.camera.id, reason, pause, exc_info=exc)
        else:
            log.warning("camera %s: %s (%d in a row); restarting in %.1f s", self.camera.id, reason, failures, pause)
        self.stats.error = reason
        self.stats.reset_rate()
        try:
            self._set_state(CameraState.DEGRADED, f"{reason}; restarting in {pause:.1f} s"[:500])
        except Exception:  # reporting must not take the stage down
            log.exception("camera %s: cannot publish the degraded status", self.camera.id)

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
        """The detect stage, supervised: a frame that fails (or any other error) restarts it after a pause."""
        failures = 0
        try:
            while True:
                try:
                    item = self._frames.get(timeout=0.5)
                    if item is _STOP:
                        break
                    if not isinstance(item, Frame):
                        raise TypeError(f"not a frame: {type(item).__name__}")
                    self._analyse(item)
                    failures = 0
                except queue.Empty:
                    if self.stop.is_set():
                        break
                except Exception as exc:  # one bad frame, an onnxruntime error ...: report, pause, go on
                    failures += 1
                    pause = self._pause(failures)
                    self._stage_failed("detect", exc, pause, failures)
                    self.stats.restarts["detect"] += 1  # counted once the status says degraded
                    self.stats.failures += 1
                    if self.stop.wait(pause):
                        break
        finally:
            self.done.set()

    def _analyse(self, frame: Frame) -> None:
        h, w = frame.image.shape[:2]
        size = frame.source_size or (w, h)  # zones are drawn on the video's own pixels
        with self._lock:
            camera = self.camera
            if self._layout is None or self._layout.frame_size != size:
                self._layout = Layout(camera, *size)
                self._fusion = SeatFusion.for_camera(Path(self.cfg.state_dir), camera, self._layout)
            layout, smoother, gate, fusion = self._layout, self._smoother, self._gate, self._fusion
        dets = self.detector.detect(
            frame.image, camera.detect, roi=layout.region(w, h), gate=gate, now=frame.ts.timestamp()
        )
        if size != (w, h):  # scaled in the decoder: boxes back to the video's pixels
            factor = np.array([size[0] / w, size[1] / h] * 2, np.float32)
            dets = Detections(dets.xyxy * factor, dets.confidence)
        timing = self.detector.last_timing
        tiles = int(timing.get("tiles", 1))
        self.stats.tiles_run += tiles
        self.stats.tiles_skipped += int(timing.get("tiles_skipped", 0))
        reused = int(timing.get("tiles_reused", 0))
        self.stats.tiles_reused += reused
        tiles += reused  # processing.tiles: the tiles this analysis is made of, run or reused
        tallies = layout.count(dets)
        if fusion is not None:
            tallies = fusion.apply(frame.image, tallies, frame.ts.timestamp())
        smoothed = smoother.update(tallies, layout)
        if self._auto_reference.observe(frame.image, dets, size, frame.ts.timestamp(), datetime.now()):
            with self._lock:
                self._layout = None  # a new reference was stored: reload it with the layout
        now = time.monotonic()
        with self._lock:
            self._latest, self._latest_size = (frame.image, dets), size
        self.stats.tick(now)
        self.stats.latency_ms = (now - frame.captured) * 1000.0
        self.stats.sections = smoothed
        if smoother.warm and self._should_publish(smoothed, now):
            if self._publish(frame, camera, smoothed, tiles):
                self._last_sent = {k: (v.occupied, v.people) for k, v in smoothed.items()}
            self._last_sent_at = now
        overloaded = self._overloaded(camera)
        if self._store_error:
            self._set_state(CameraState.DEGRADED, self._store_error[:500], live_figures=True)
        elif overloaded:
            self._set_state(CameraState.DEGRADED, overloaded, live_figures=True)
        elif getattr(self.detector, "degraded", None):  # model.fallback: cpu is running instead of the config
            self._set_state(CameraState.DEGRADED, self.detector.degraded)
        else:
            self._set_state(CameraState.ONLINE, None)

    def _overloaded(self, camera: CameraConfig) -> str | None:
        """``overloaded: ...`` when a live camera's achieved analysis rate is under its ``analysis_fps`` because
        detection cannot keep up (frames went stale waiting for it); a source that delivers fewer frames (a
        keyframe-only stream, a slow camera) is not an overload."""
        if not self._live or self.stats.rate_samples < OVERLOAD_FRAMES or not self.stats.detection_behind:
            return None
        if self.stats.fps >= OVERLOAD_RATIO * camera.analysis_fps:
            return None
        return f"overloaded: {self.stats.fps:.2f} of {camera.analysis_fps:g} analyses/s"

    def _should_publish(self, sections: dict[str, SectionTally], now: float) -> bool:
        if self._last_sent is None or now - self._last_sent_at >= self.cfg.mqtt.interval_s:
            return True
        step = self.cfg.mqtt.min_change
        for sid, tally in sections.items():
            occ, ppl = self._last_sent.get(sid, (-step, -step))
            if abs(tally.occupied - occ) >= step or abs(tally.people - ppl) >= step:
                return True
        return False

    def _publish(self, frame: Frame, camera: CameraConfig, sections: dict[str, SectionTally], tiles: int) -> bool:
        """Queue one occupancy message; False (counted in `processing.dropped`) when it cannot be stored."""
        try:
            self._send(frame, camera, sections, tiles)
        except (sqlite3.Error, OSError) as exc:  # disk full, read-only or failing storage
            self.stats.unstored += 1
            self._store_error = f"counts not stored (disk full?): {exc}; {self.stats.unstored} dropped so far"
            self.stats.error = self._store_error
            if self.stats.unstored == 1 or self.stats.unstored % 100 == 0:
                log.error("camera %s: %s", camera.id, self._store_error)
            return False
        if self._store_error:
            log.info("camera %s: counts stored again (%d were dropped)", camera.id, self.stats.unstored)
        self._store_error = None
        self.stats.published += 1
        return True

    def _send(self, frame: Frame, camera: CameraConfig, sections: dict[str, SectionTally], tiles: int) -> None:
        seats = {s.id: s.seats for s in camera.sections}
        mapped = {s.id for s in camera.sections if s.seat_map}  # these also say which seats are taken
        msg = Occupancy(
            venue=self.cfg.venue,
            camera=camera.id,
            seq=self.publisher.next_seq(),
            ts=frame.ts,
            sections=[
                SectionCount(
                    id=sid,
                    seats=seats[sid],
                    occupied=min(t.occupied, seats[sid]),
                    people=t.people,
                    taken=sorted(t.seats_taken) if sid in mapped else None,
                )
                for sid, t in sections.items()
            ],
            model=self.detector.name,
            processing=Processing(
                fps=round(self.stats.fps, 3),
                latency_ms=round(self.stats.latency_ms, 1),
                frames=self.stats.frames,
                tiles=max(1, tiles),
                dropped=self.publisher.stats.dropped + self.stats.unstored,
            ),
        )
        self.publisher.publish_occupancy(msg)


class EdgeRunner:
    """All cameras of one device, plus the periodic console status line."""

    def __init__(self, cfg: EdgeConfig, detector: Detector) -> None:
        self.cfg = cfg
        self.detector = detector
        self.stop = threading.Event()
        self.workers = [CameraWorker(cfg, cam, detector, self.stop) for cam in cfg.cameras]

    def run(self, duration: float | None = None) -> int:
        """Run until `duration` elapses, `stop` is set, or every (non-looping) source has ended."""
        self.detector.start_scheduler()  # one fair inference queue for all cameras (edge/scheduler.py)
        for w in self.workers:
            w.start()
        metrics = None
        if self.cfg.metrics_port is not None:
            from edge.metrics import serve

            metrics = serve(self.workers, self.cfg.metrics_port, self.cfg.metrics_bind)
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
            self.detector.stop_scheduler()
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
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
                f"dropped {ps.dropped + s.unstored}"
            )
        return "; ".join(parts)
