"""Video decoders through PyAV: the CPU, or a hardware decoder (VAAPI, NVDEC, V4L2 M2M) chosen in config.

`resolve(mode)` turns a camera's ``decode`` setting into the decoder to use: an explicit hardware decoder
that is not usable here raises `DecoderUnavailable` (one line saying why); ``auto`` takes the first usable
hardware decoder and otherwise the CPU, with the reason. `Decoder` wraps one codec context and decodes
either a single keyframe on its own (drained at once, so there is no reordering delay) or every packet.
"""

from __future__ import annotations

import functools
import glob
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

DecoderKind = Literal["cpu", "vaapi", "nvdec", "v4l2m2m"]
HARDWARE: tuple[DecoderKind, ...] = ("nvdec", "vaapi", "v4l2m2m")
_HWACCEL_DEVICE = {"nvdec": "cuda", "vaapi": "vaapi"}


class DecoderUnavailable(RuntimeError):
    """The configured hardware decoder cannot be used on this box; the message says why."""


def _m2m_decoders() -> list[str]:
    """V4L2 memory-to-memory decoder devices (Raspberry Pi: bcm2835-codec-decode, rpivid ...)."""
    found = []
    for name_file in glob.glob("/sys/class/video4linux/video*/name"):
        name = Path(name_file).read_text(errors="replace").strip().lower()
        if "dec" in name or "codec" in name or "rpivid" in name:
            found.append(f"/dev/{Path(name_file).parent.name} ({name})")
    return found


@functools.cache
def unavailable_reason(kind: DecoderKind, codec: str = "h264") -> str | None:
    """Why decoder `kind` cannot decode `codec` here, or None when it looks usable."""
    if kind == "cpu":
        return None
    devices = set(hwdevices_available())
    if kind == "v4l2m2m":
        name = f"{codec}_v4l2m2m"
        if name not in av.codecs_available:
            return f"PyAV's FFmpeg has no {name} decoder"
        return None if _m2m_decoders() else "no V4L2 memory-to-memory decoder device (/sys/class/video4linux)"
    device = _HWACCEL_DEVICE[kind]
    if device not in devices:
        extra = " (the PyPI wheel lacks it: pip install av --no-binary av against the system FFmpeg)"
        return f"PyAV's FFmpeg has no {device} support{extra if kind == 'vaapi' else ''}"
    if kind == "vaapi" and not glob.glob("/dev/dri/renderD*"):
        return "no /dev/dri/renderD* render node (Intel/AMD GPU driver not loaded?)"
    try:
        HWAccel(device, allow_software_fallback=False).create(av.Codec(codec, "r"))
    except Exception as exc:  # no driver, no device, codec not supported by the device ...
        return f"cannot open a {device} device: {exc}"
    return None


def resolve(mode: str, codec: str = "h264") -> tuple[DecoderKind, str | None]:
    """``(decoder, reason)`` for a camera's ``decode`` setting; reason says why ``auto`` uses the CPU."""
    if mode == "cpu":
        return "cpu", None
    if mode != "auto":
        why = unavailable_reason(mode, codec)  # type: ignore[arg-type]
        if why:
            raise DecoderUnavailable(f"decode: {mode} is not available here: {why}")
        return mode, None  # type: ignore[return-value]
    reasons = []
    for kind in HARDWARE:
        why = unavailable_reason(kind, codec)
        if why is None:
            return kind, None
        reasons.append(f"{kind}: {why}")
    return "cpu", "no hardware decoder (" + "; ".join(reasons) + ")"


class Decoder:
    """One codec context for a video stream, on the CPU or a hardware decoder."""

    def __init__(self, stream: av.video.stream.VideoStream, kind: DecoderKind = "cpu") -> None:
        self.kind: DecoderKind = kind
        source = stream.codec_context
        if source is None:
            raise av.error.DecoderNotFoundError(0, "no decoder for this stream's codec")
        if kind == "cpu":
            ctx = source
        elif kind == "v4l2m2m":
            ctx = av.CodecContext.create(f"{source.name}_v4l2m2m", "r")
        else:
            hw = HWAccel(_HWACCEL_DEVICE[kind], allow_software_fallback=False)
            ctx = av.CodecContext.create(source.name, "r", hwaccel=hw)
        if ctx is not source:
            if source.extradata:
                ctx.extradata = source.extradata
            ctx.width, ctx.height = source.width, source.height
        if not ctx.is_open:
            ctx.thread_type = "AUTO"
        self.ctx = ctx

    def key(self, packet: av.Packet) -> av.VideoFrame | None:
        """Decode one keyframe on its own: drained at once, then the context is ready for the next one."""
        try:
            frames = [*self.ctx.decode(packet), *self.ctx.decode(None)]
        finally:
            self.ctx.flush_buffers()
        return frames[-1] if frames else None

    def feed(self, packet: av.Packet | None) -> Iterable[av.VideoFrame]:
        """Decode packets in order (every frame); None drains the decoder at the end of a file."""
        return self.ctx.decode(packet)

    def reset(self) -> None:
        self.ctx.flush_buffers()
