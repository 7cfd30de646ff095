"""Reading a file, RTSP, HTTP or other FFmpeg source with PyAV, decoding only what is analysed.

Every packet is demuxed (a live stream never lags), but frames are decoded in one of two modes:

* ``keyframes``: only keyframes that are due for analysis are decoded, each on its own; packets in
  between are never decoded. Used while keyframes come at least every ``KEY_TOLERANCE`` x the analysis
  interval (measured from the keyframes' timestamps, reported in the camera's status).
* ``full``: every packet is decoded, and only the frames due for analysis are converted to BGR. Used when
  keyframes are rarer than the analysis needs (said once in the log, with the reason, and in the status)
  or when ``keyframe_only`` is off. The packets since the last keyframe are kept, so the switch decodes
  from that keyframe without waiting for the next one.

No keyframe and nothing analysed for ``keyframe_timeout`` x the analysis interval (or x the measured
keyframe interval, when longer; at least `MIN_NO_KEY_S`): the camera reports ``degraded`` with the reason
and decodes every frame; it is ``online`` again as soon as a frame is analysed.

A hardware decoder that fails mid-stream falls back to the CPU with ``decode: auto`` (status says why);
with an explicit hardware decoder the session ends with `SourceError` and the source is reopened.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import av
import numpy as np

from edge.decode import Decoder, DecoderKind, DecoderUnavailable, resolve
from turnout.contract import CameraState, DecodeStatus

if TYPE_CHECKING:
    from edge.config import CameraConfig
    from edge.sources import Frame, FrameSource

log = logging.getLogger(__name__)

KEY_TOLERANCE = 1.1
"""Keyframe-only decoding while keyframes come at most this many analysis intervals apart."""
LATE_KEY = 1.5
"""A keyframe this many analysis (or keyframe) intervals late switches to full decoding before it comes."""
GOP_BUFFER_BYTES = 64 * 1024 * 1024
"""Packets kept since the last keyframe (for an immediate switch to full decoding), at most this much."""
MAX_BAD_PACKETS = 250
"""Packets in a row that fail to decode before the session is given up as undecodable."""
MIN_NO_KEY_S = 5.0
"""A missing keyframe is reported after at least this long (camera GOPs of 1-4 s are normal)."""
OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class DecodeInfo:
    """What the camera's status says about decoding (`turnout.contract.DecodeStatus`)."""

    mode: str = "keyframes"
    decoder: DecoderKind = "cpu"
    keyframe_interval_s: float | None = None
    reason: str | None = None

    def status(self) -> DecodeStatus:
        return DecodeStatus(
            mode=self.mode,  # type: ignore[arg-type]
            decoder=self.decoder,
            keyframe_interval_s=self.keyframe_interval_s,
            reason=self.reason[:300] if self.reason else None,
        )


DecodeCallback = Callable[[DecodeInfo], None]


def open_container(camera: CameraConfig) -> av.container.InputContainer:
    """Open the camera's source with PyAV; `SourceError` (from edge.sources) says why it cannot."""
    from edge.sources import SourceError

    options: dict[str, str] = {}
    if camera.source_kind == "rtsp":
        options["rtsp_transport"] = camera.rtsp_transport
    try:
        container = av.open(str(camera.source), options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    except (av.error.FFmpegError, OSError) as exc:
        what = "cannot decode video file" if camera.source_kind == "file" else "cannot open"
        raise SourceError(f"camera {camera.id}: {what}: {camera.source} ({exc})") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"camera {camera.id}: no video stream in {camera.source}")
    return container


class AvSession:
    """One opened source: yields the analysis frames of one stream session (or of a whole file)."""

    def __init__(
        self,
        source: FrameSource,
        container: av.container.InputContainer,
        info: DecodeInfo,
        on_decode: DecodeCallback,
        scale: bool = True,
    ) -> None:
        self.source = source
        self.camera = source.camera
        self.stop: threading.Event = source.stop
        self.container = container
        self.stream = container.streams.video[0]
        self.live = self.camera.source_kind != "file"
        self.period = 1.0 / self.camera.analysis_fps
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.native_fps = float(rate) if rate and 0 < float(rate) < 1000 else 25.0
        self.on_decode = on_decode
        self.scale = scale
        self._info = info
        codec = self.stream.codec_context.name if self.stream.codec_context else "unknown"
        self.decoder = self._new_decoder(info.decoder, codec)
        self.mode = "keyframes" if self.camera.keyframe_only else "full"
        self._key_times: deque[float] = deque(maxlen=6)  # stream seconds of the latest keyframes
        self._last_key_clock: float | None = None
        self._gop: list[tuple[av.Packet, float]] = []
        self._gop_bytes = 0
        self._next_due = -float("inf")
        self._bad = 0
        self._offset = 0.0  # media seconds of earlier loops (files)
        self._started_wall = datetime.now(UTC)
        self._started_mono = time.monotonic()
        self._session_clock = 0.0
        self._no_key_reported = False
        self._last_yield_clock: float | None = None
        self._pending: list[tuple[av.Packet, float]] = []  # packets to decode on a switch to full decoding
        self._t0: float | None = None
        self.yielded = 0
        self._publish(mode=self.mode, reason=None if self.camera.keyframe_only else "keyframe_only is off")

    # ----------------------------------------------------------------------------------- decoders
    def _new_decoder(self, kind: DecoderKind, codec: str) -> Decoder:
        from edge.sources import SourceError

        try:
            return Decoder(self.stream, kind)
        except av.error.DecoderNotFoundError:
            raise SourceError(f"camera {self.camera.id}: no decoder for codec {codec!r} in {self.camera.source}") from None
        except Exception as exc:
            if kind == "cpu":
                raise SourceError(f"camera {self.camera.id}: cannot decode codec {codec!r}: {exc}") from None
            return self._hw_failed(exc, codec)

    def _hw_failed(self, exc: BaseException, codec: str | None = None) -> Decoder:
        """A hardware decoder failed: CPU with ``decode: auto`` (degraded, with the reason), else give up."""
        from edge.sources import SourceError

        kind = self.decoder.kind if hasattr(self, "decoder") else self._info.decoder
        reason = f"{kind} decoder failed: {type(exc).__name__}: {exc}"
        if self.camera.decode != "auto":
            raise SourceError(f"camera {self.camera.id}: {reason}") from None
        log.warning("camera %s: %s; decoding on the CPU from now on", self.camera.id, reason)
        self.source.hw_failed = reason
        self.source.on_state(CameraState.DEGRADED, f"{reason}; decoding on the CPU")
        self._publish(decoder="cpu", reason=f"{reason}; CPU fallback")
        self._gop.clear()
        self._gop_bytes = 0
        return Decoder(self.stream, "cpu")

    # -------------------------------------------------------------------------------------- status
    def _publish(self, **changes: object) -> None:
        info = replace(self._info, **changes)  # type: ignore[arg-type]
        if info != self._info:
            self._info = info
            self.source.decode_info = info
            self.on_decode(info)

    def _interval(self) -> float | None:
        gaps = [b - a for a, b in zip(self._key_times, list(self._key_times)[1:], strict=False) if b > a]
        return statistics.median(gaps) if gaps else None

    def _report_interval(self, interval: float) -> None:
        shown = self._info.keyframe_interval_s
        if shown is None or abs(interval - shown) > 0.1 * shown:  # live jitter does not re-publish the status
            self._publish(keyframe_interval_s=round(interval, 3))

    # ------------------------------------------------------------------------------------- clocks
    def _media_s(self, pts: int | None, time_base: object) -> float | None:
        return None if pts is None or time_base is None else float(pts * time_base) + self._offset

    def _clock(self, media: float | None) -> float:
        """The schedule's clock: media seconds for files, arrival (monotonic) seconds for live streams."""
        if self.live or media is None:
            return time.monotonic() if self.live else self._session_clock
        return media

    # ------------------------------------------------------------------------------------- frames
    def _due(self, clock: float, spacing: float) -> bool:
        # a candidate less than half its spacing early is taken (0.45: frames exactly in between are not)
        return clock >= self._next_due - min(0.45 * spacing, 0.5 * self.period)

    def _emit(self, frame: av.VideoFrame, clock: float, media: float | None) -> Frame | None:
        from edge.sources import Frame

        side = self.camera.decode_side if self.scale else None
        w, h = frame.width, frame.height
        if side and max(w, h) > side:
            f = side / max(w, h)
            image = frame.to_ndarray(format="bgr24", width=round(w * f / 2) * 2, height=round(h * f / 2) * 2)
        else:
            image = frame.to_ndarray(format="bgr24")
        image = np.ascontiguousarray(image)
        self._next_due = clock + self.period
        self._last_yield_clock = clock
        self.source.decoded += 1
        if media is not None and not self.live:
            if self.camera.realtime:
                delay = self._started_mono + media - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return None
            ts = self._started_wall + timedelta(seconds=media)
            index = round(media * self.native_fps)
        else:
            ts, index = datetime.now(UTC), self.source.grabbed
        self.yielded += 1
        return Frame(image, ts, index, time.monotonic(), source_size=(w, h))

    def frames(self) -> Iterator[Frame]:
        """Analysis frames until the stream ends, fails or `stop` is set; True when a file is finished."""
        while not self.stop.is_set():
            last_media = None
            packets = self.container.demux(self.stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except (av.error.FFmpegError, OSError) as exc:
                    if not self.live:
                        raise
                    log.info("camera %s: stream read failed: %s", self.camera.id, exc)
                    return False  # read timeout, connection reset ...: reconnect
                if self.stop.is_set():
                    return True
                if packet.size == 0:
                    continue
                self.source.grabbed += 1
                media = self._media_s(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
                if media is not None:
                    last_media = media
                self._session_clock += 1.0 / self.native_fps
                yield from self._packet(packet, media)
            if self.live:
                return False  # the stream ended: reconnect
            yield from self._drain()
            if self.yielded == 0:
                from edge.sources import SourceError

                raise SourceError(f"camera {self.camera.id}: no frame could be decoded from {self.camera.source}")
            if not self.camera.loop:
                return True
            self._offset = (last_media if last_media is not None else self._offset) + 1.0 / self.native_fps
            self._session_clock = self._offset
            self.container.seek(0)
            self.decoder.reset()
            self._gop.clear()
            self._gop_bytes = 0
        return True

    def _packet(self, packet: av.Packet, media: float | None) -> Iterator[Frame]:
        clock = self._clock(media)
        key = packet.is_keyframe
        if key:
            stream_t = media if media is not None else time.monotonic()
            if self._key_times and stream_t <= self._key_times[-1]:
                self._key_times.clear()  # timestamps restarted (loop, camera reset)
            self._key_times.append(stream_t)
            self._last_key_clock = clock
            self._no_key_reported = False
            interval = self._interval()
            if interval is not None:
                self._report_interval(interval)
                self._choose_mode(interval)
        if self.mode == "keyframes":
            yield from self._keyframe_mode(packet, key, clock, media)
        else:
            yield from self._decode_all(packet, clock, media)
        self._check_gap(clock)

    def _choose_mode(self, interval: float) -> None:
        """Keyframe-only while keyframes come often enough; say so (once per change) when that changes."""
        fits = interval <= KEY_TOLERANCE * self.period
        if not self.camera.keyframe_only:
            return
        reason = f"keyframes every {interval:.2f} s, analysis every {self.period:.2f} s: decoding every frame"
        if self.mode == "keyframes" and not fits:
            log.info("camera %s: %s", self.camera.id, reason)
            self._switch_to_full(reason)
        elif self.mode == "full" and not fits and (self._info.reason or "").startswith("no keyframe within"):
            self._publish(reason=reason)  # the measured interval replaces the first guess
        elif self.mode == "full" and fits:
            log.info("camera %s: keyframes every %.2f s again: decoding keyframes only", self.camera.id, interval)
            self.decoder.reset()
            self.mode = "keyframes"
            self._gop.clear()
            self._gop_bytes = 0
            self._publish(mode="keyframes", reason=None)

    def _switch_to_full(self, reason: str) -> None:
        self.mode = "full"
        self._publish(mode="full", reason=reason)
        self.decoder.reset()
        self._pending = list(self._gop)  # decoded from the last keyframe by `_decode_all`
        self._gop.clear()
        self._gop_bytes = 0

    def _check_gap(self, clock: float) -> None:
        """Keyframes late: decode every frame; none for `keyframe_timeout` analysis intervals: degraded too."""
        if not self.camera.keyframe_only:
            return
        since = self._last_key_clock if self._last_key_clock is not None else self._first_clock(clock)
        gap = clock - since
        late = LATE_KEY * max(self.period, self._interval() or 0.0)  # live arrival jitter must not flap modes
        if self.mode == "keyframes" and self._last_key_clock is not None and gap > late:
            reason = (
                f"no keyframe within {gap:.2f} s, analysis every {self.period:.2f} s: decoding every frame"
            )
            log.info("camera %s: %s", self.camera.id, reason)
            self._switch_to_full(reason)
        limit = max(self.camera.keyframe_timeout * max(self.period, self._interval() or 0.0), MIN_NO_KEY_S)
        stalled = self._last_yield_clock is None or clock - self._last_yield_clock > limit
        if gap > limit and stalled and not self._no_key_reported:
            self._no_key_reported = True  # once per gap: reset by the next keyframe
            reason = (
                f"no keyframe for {gap:.1f} s (analysis every {self.period:.2f} s, limit {limit:.1f} s): "
                "nothing to analyse, decoding every frame"
            )
            log.warning("camera %s: %s", self.camera.id, reason)
            self.source.on_state(CameraState.DEGRADED, reason)
            if self.mode == "keyframes":
                self._switch_to_full(reason)

    def _first_clock(self, clock: float) -> float:
        if self._t0 is None:
            self._t0 = clock
        return self._t0

    def _keyframe_mode(self, packet: av.Packet, key: bool, clock: float, media: float | None) -> Iterator[Frame]:
        if key:
            self._gop = [(packet, clock)]
            self._gop_bytes = packet.size
        elif self._gop and self._gop_bytes + packet.size <= GOP_BUFFER_BYTES:
            self._gop.append((packet, clock))
            self._gop_bytes += packet.size
        else:  # too long a GOP to keep: a switch to full decoding then waits for the next keyframe
            self._gop.clear()
        if not key or not self._due(clock, self._interval() or 0.0):
            return
        self.source.fed += 1
        frame = self._decode(lambda: self.decoder.key(packet))
        if frame is not None:
            out = self._emit(frame, clock, media)
            if out is not None:
                yield out

    def _decode_all(self, packet: av.Packet | None, clock: float, media: float | None) -> Iterator[Frame]:
        if self._pending:
            pending, self._pending = self._pending, []
            for old, old_clock in pending:
                yield from self._decode_all(old, old_clock, None)
        self.source.fed += packet is not None
        frames = self._decode(lambda: list(self.decoder.feed(packet)))
        for frame in frames or []:
            fmedia = self._media_s(frame.pts, self.stream.time_base) if not self.live else None
            fclock = self._clock(fmedia) if fmedia is not None else clock
            if self._due(fclock, 1.0 / self.native_fps):
                out = self._emit(frame, fclock, fmedia if fmedia is not None else media)
                if out is not None:
                    yield out

    def _drain(self) -> Iterator[Frame]:
        """End of a file: the frames still inside a fully decoding decoder."""
        if self.mode == "full":
            yield from self._decode_all(None, self._session_clock, None)
        self.decoder.reset()

    def _decode(self, work: Callable[[], object]) -> object:
        """Run one decode; a failing hardware decoder falls back, a run of bad packets ends the session."""
        from edge.sources import SourceError

        try:
            result = work()
        except av.error.FFmpegError as exc:
            if self.decoder.kind != "cpu":
                self.decoder = self._hw_failed(exc)
                return None
            self._bad += 1
            if self._bad >= MAX_BAD_PACKETS:
                raise SourceError(
                    f"camera {self.camera.id}: cannot decode {self.stream.codec_context.name} video from "
                    f"{self.camera.source}: {self._bad} packets in a row failed ({exc})"
                ) from None
            return None
        self._bad = 0
        return result


def decoder_for(camera: CameraConfig, hw_failed: str | None) -> DecodeInfo:
    """The decoder a new session starts with: after a hardware failure under ``auto``, the CPU."""
    if hw_failed and camera.decode == "auto":
        return DecodeInfo(decoder="cpu", reason=f"{hw_failed}; CPU fallback")
    try:
        kind, why = resolve(camera.decode)
    except DecoderUnavailable as exc:
        from edge.sources import SourceError

        raise SourceError(f"camera {camera.id}: {exc}") from None
    if why and camera.id not in _LOGGED_AUTO:
        _LOGGED_AUTO.add(camera.id)
        log.info("camera %s: decode auto: %s; decoding on the CPU", camera.id, why)
    return DecodeInfo(decoder=kind)


_LOGGED_AUTO: set[str] = set()
