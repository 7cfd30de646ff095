"""Camera sources: video files, RTSP and HTTP(S)/MJPEG URLs (PyAV), USB cameras (OpenCV).

`FrameSource.frames()` yields only the frames to analyse, at `analysis_fps`. Files and network streams are
read with PyAV (edge/avsource.py): every packet is demuxed, and only keyframes are decoded when they come
often enough for the analysis, else every frame is decoded and only the analysed ones are converted. USB
cameras (and every source when PyAV is not installed) are read with OpenCV, skipping frames with `grab()`.
A stream that drops is reopened with exponential backoff (tenacity) while `on_state` reports ``degraded``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from edge.config import CameraConfig
from turnout.contract import CameraState

try:
    from edge import avsource
except ImportError:  # PyAV not installed: OpenCV reads every source
    avsource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

# OpenCV reads FFmpeg options from this variable when a capture opens; opens are serialised so each
# camera gets its own RTSP transport.
_OPEN_LOCK = threading.Lock()
STABLE_S = 30.0
"""A stream session that delivered frames this long resets the reconnect backoff."""
_OPEN_TIMEOUT_MS = 5000
_READ_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message names the camera and the source."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # BGR
    ts: datetime  # frame time, UTC
    index: int  # frame number in the source since it was opened
    captured: float  # time.monotonic() when it was read, for latency figures
    source_size: tuple[int, int] | None = None  # (w, h) of the video when `image` was scaled in the decoder


StateCallback = Callable[[CameraState, str | None], None]


def uses_pyav(camera: CameraConfig) -> bool:
    """Files and network streams are read with PyAV when it is installed; USB cameras with OpenCV."""
    return avsource is not None and camera.source_kind != "usb"


def open_capture(camera: CameraConfig) -> cv2.VideoCapture:
    """Open the camera's source or raise `SourceError` saying why."""
    kind = camera.source_kind
    src = camera.source
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, _READ_TIMEOUT_MS]
    if kind == "usb":
        cap = cv2.VideoCapture(int(src) if str(src).isdigit() else str(src))
    elif kind == "file":
        if not os.path.isfile(str(src)):
            raise SourceError(f"camera {camera.id}: video file not found: {src}")
        cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG)
    else:
        with _OPEN_LOCK:
            previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{camera.rtsp_transport}"
            try:
                cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG, params)
            finally:
                if previous is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
    if not cap.isOpened():
        cap.release()
        what = "cannot decode video file (corrupt or unsupported format)" if kind == "file" else "cannot open"
        raise SourceError(f"camera {camera.id}: {what}: {src}")
    return cap


def probe(camera: CameraConfig) -> tuple[np.ndarray, float]:
    """Open the source, read one frame; return it with the source's frame rate (for `edge check`)."""
    cap = open_capture(camera)
    try:
        ok, image = cap.read()
        if not ok or image is None:
            raise SourceError(f"camera {camera.id}: opened but no frame could be decoded from {camera.source}")
        fps = cap.get(cv2.CAP_PROP_FPS)
        return image, fps if fps and 0 < fps < 1000 else 0.0
    finally:
        cap.release()


class FrameSource:
    """Produces analysis frames for one camera until `stop` is set or a non-looping file ends."""

    def __init__(
        self,
        camera: CameraConfig,
        stop: threading.Event,
        on_state: StateCallback | None = None,
        on_decode: Callable[[avsource.DecodeInfo], None] | None = None,
        scale: bool = True,
    ):
        """`on_decode` hears how the video is decoded (PyAV sources); `scale` False keeps the native size."""
        self.camera = camera
        self.stop = stop
        self.on_state = on_state or (lambda state, reason: None)
        self.on_decode = on_decode or (lambda info: None)
        self.scale = scale
        self.decoded = 0  # frames retrieved (converted) for analysis
        self.grabbed = 0  # frames (PyAV: packets) demuxed in total
        self.fed = 0  # PyAV: packets given to the decoder (keyframe-only decoding: the analysed keyframes)
        self.reconnects = 0
        self.decode_info: avsource.DecodeInfo | None = None  # PyAV sources: the latest decode status
        self.hw_failed: str | None = None  # a hardware decoder failed: later sessions use the CPU (auto)
        self._flaps = 0  # stream sessions in a row that ended before STABLE_S

    # ------------------------------------------------------------------------------------ public
    def frames(self) -> Iterator[Frame]:
        first = True
        while not self.stop.is_set():
            cap = self._open(first)
            first = False
            if cap is None:
                return
            session_start, frames = time.monotonic(), 0
            try:
                if self.camera.source_kind == "file":
                    finished = yield from self._read_file(cap)
                    if finished:
                        return
                else:
                    for frame in self._read_stream(cap):
                        frames += 1
                        yield frame
            finally:
                if uses_pyav(self.camera):
                    cap.close()
                else:
                    cap.release()
            if not self.stop.is_set() and self.camera.source_kind != "file":
                self.reconnects += 1
                self.on_state(CameraState.DEGRADED, f"stream lost: {self.camera.source}")
                # a stream that opens but dies at once (flapping) is retried with growing pauses too;
                # the pause resets once a session has delivered frames for STABLE_S
                stable = frames > 0 and time.monotonic() - session_start >= STABLE_S
                self._flaps = 0 if stable else self._flaps + 1
                pause = 0.0 if stable else min(self.camera.reconnect_max_s, 0.5 * 2 ** (self._flaps - 1))
                log.warning("camera %s: stream lost, reconnecting in %.1f s", self.camera.id, pause)
                if pause and self.stop.wait(pause):
                    return

    # ----------------------------------------------------------------------------------- opening
    def _open(self, first: bool) -> cv2.VideoCapture | av.container.InputContainer | None:
        """Open the source; files fail at once, streams retry with backoff while degraded."""
        opener = avsource.open_container if uses_pyav(self.camera) else open_capture
        if self.camera.source_kind == "file":
            if not os.path.isfile(str(self.camera.source)):
                raise SourceError(f"camera {self.camera.id}: video file not found: {self.camera.source}")
            return opener(self.camera)  # a missing or corrupt file is a config error

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("camera %s: %s; retry in %.1f s", self.camera.id, exc, state.upcoming_sleep)
            self.on_state(CameraState.DEGRADED, str(exc))

        retrying = Retrying(
            retry=retry_if_exception_type(SourceError),
            wait=wait_exponential(multiplier=0.5, min=0.5, max=self.camera.reconnect_max_s),
            stop=lambda _state: self.stop.is_set(),
            sleep=self.stop.wait,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(opener, self.camera)  # "online" is reported once frames are analysed
        except SourceError:
            return None  # stopped while retrying

    # ----------------------------------------------------------------------------------- reading
    def _av_session(self, container: av.container.InputContainer) -> Iterator[Frame]:
        """One PyAV session (edge/avsource.py); returns True when a file is done."""
        info = avsource.decoder_for(self.camera, self.hw_failed)
        return (yield from avsource.AvSession(self, container, info, self.on_decode, self.scale).frames())

    def _read_file(self, cap: cv2.VideoCapture | av.container.InputContainer) -> Iterator[Frame]:
        """Yield analysis frames of a video file; return True when the file is done (no loop)."""
        if uses_pyav(self.camera):
            return (yield from self._av_session(cap))
        native = cap.get(cv2.CAP_PROP_FPS) or 25.0
        native = native if 0 < native < 1000 else 25.0
        stride = max(1, round(native / self.camera.analysis_fps))
        started_wall = datetime.now(UTC)
        started_mono = time.monotonic()
        loop_offset = 0
        while not self.stop.is_set():
            index = 0
            while not self.stop.is_set():
                for _ in range(stride - 1):
                    if not cap.grab():
                        break
                    index += 1
                    self.grabbed += 1
                ok, image = cap.read()
                if not ok or image is None:
                    break
                self.grabbed += 1
                self.decoded += 1
                media_t = (loop_offset + index) / native
                if self.camera.realtime:
                    delay = started_mono + media_t - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        return True
                yield Frame(image, started_wall + timedelta(seconds=media_t), index, time.monotonic())
                index += 1
            if index == 0:
                raise SourceError(f"camera {self.camera.id}: no frame could be decoded from {self.camera.source}")
            if not self.camera.loop:
                return True
            loop_offset += index
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return True

    def _read_stream(self, cap: cv2.VideoCapture | av.container.InputContainer) -> Iterator[Frame]:
        """Read a live stream continuously (so it never lags) and decode only the analysis frames."""
        if uses_pyav(self.camera):
            yield from self._av_session(cap)
            return
        period = 1.0 / self.camera.analysis_fps
        next_due = time.monotonic()
        index = 0
        while not self.stop.is_set():
            if not cap.grab():
                return
            self.grabbed += 1
            now = time.monotonic()
            if now >= next_due:
                ok, image = cap.retrieve()
                if not ok or image is None:
                    return
                self.decoded += 1
                next_due = max(next_due + period, now)
                yield Frame(image, datetime.now(UTC), index, now)
            index += 1
