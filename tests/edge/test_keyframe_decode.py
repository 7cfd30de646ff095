"""Keyframe-only decoding (PyAV) on generated H.264 clips: same frames and counts as full decoding, the
fall-backs (rare or missing keyframes, a failing hardware decoder, an undecodable codec) and the decoders'
config errors. In process, on short clips made with ffmpeg from shared footage; no timing assertions.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from edge import avsource, decode
from edge.config import CameraConfig
from edge.detector import Detector
from edge.sources import FrameSource, SourceError
from edge.zones import Layout
from turnout.contract import CameraState, Status


def make_clip(shared: Path, out: Path, size: str, seconds: float, gop: int) -> Path:
    """An H.264 clip of crowd_topdown at 25 fps with a keyframe every `gop` frames (and no others)."""
    if not out.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-t", str(seconds),
             "-i", str(shared / "data/videos/crowd_topdown_1280x720.mp4"), "-vf", f"scale={size}", "-r", "25",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop),
             "-sc_threshold", "0", "-an", str(out)],
            check=True, timeout=120,
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def clips(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "4k": make_clip(shared, d / "crowd4k.mp4", "3840:2160", 2.4, 50),  # keyframes at 0 and 2 s
        "gop2s": make_clip(shared, d / "gop2s.mp4", "640:360", 6, 50),
        "nokey": make_clip(shared, d / "nokey.mp4", "640:360", 8, 1000),  # only the first frame is a keyframe
    }


def camera(source: Path, **kw: object) -> CameraConfig:
    data = {
        "id": "cam",
        "source": str(source),
        "loop": False,
        "realtime": False,
        "analysis_fps": 0.5,
        "sections": [{"id": "all", "seats": 500, "polygon": [[0, 0], [3840, 0], [3840, 2160], [0, 2160]]}],
        **kw,
    }
    return CameraConfig.model_validate(data)


def read(cam: CameraConfig) -> tuple[FrameSource, list, list, list]:
    states: list[tuple[CameraState, str | None]] = []
    infos: list[avsource.DecodeInfo] = []
    src = FrameSource(cam, threading.Event(), lambda s, r: states.append((s, r)), infos.append)
    return src, list(src.frames()), states, infos


def test_keyframes_only_gives_the_same_frames_and_counts_as_full_decoding(clips, model_path) -> None:
    key_src, key_frames, key_states, key_infos = read(camera(clips["4k"]))
    full_src, full_frames, _, full_infos = read(camera(clips["4k"], keyframe_only=False))
    # the same analysis frames, pixel for pixel (keyframes decode the same on their own)
    assert [f.index for f in key_frames] == [f.index for f in full_frames] == [0, 50]
    for a, b in zip(key_frames, full_frames, strict=True):
        assert np.array_equal(a.image, b.image)
    # decoded in the decoder at 1280 wide (full-frame mode), zones still in the 4K video's pixels
    assert key_frames[0].image.shape == (720, 1280, 3) and key_frames[0].source_size == (3840, 2160)
    # keyframe-only: all 60 packets demuxed, only the 2 analysed keyframes decoded; full: all 60
    assert key_src.grabbed == full_src.grabbed == 60
    assert key_src.fed == 2 and full_src.fed == 60
    assert key_infos[-1] == avsource.DecodeInfo("keyframes", "cpu", 2.0, None)
    assert full_infos[-1].mode == "full" and full_infos[-1].reason == "keyframe_only is off"
    assert key_states == []
    det = Detector(model_path, threads=1)
    cam = camera(clips["4k"])
    layout = Layout(cam, 3840, 2160)
    counts = []
    for frames in (key_frames, full_frames):
        row = []
        for f in frames:
            dets = det.detect(f.image, cam.detect)
            row.append(sum(t.people for t in layout.count(dets).values()))
        counts.append(row)
    assert counts[0] == counts[1] and min(counts[0]) > 5, counts


def test_native_size_when_tiled_or_asked(clips) -> None:
    _, frames, _, _ = read(camera(clips["4k"], decode_size="native"))
    assert frames[0].image.shape == (2160, 3840, 3) and frames[0].source_size == (3840, 2160)
    assert camera(clips["4k"], detect={"mode": "tiled"}).decode_side is None
    assert camera(clips["4k"], decode_size=960).decode_side == 960


def test_rare_keyframes_fall_back_to_full_decoding_once(clips, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge.avsource")
    _, frames, states, infos = read(camera(clips["gop2s"], analysis_fps=2))
    _, full, _, _ = read(camera(clips["gop2s"], analysis_fps=2, keyframe_only=False))
    assert [f.index for f in frames] == [f.index for f in full] and len(frames) == 12  # 2 per second, 6 s
    assert infos[-1].mode == "full" and infos[-1].keyframe_interval_s == 2.0
    assert infos[-1].reason == "keyframes every 2.00 s, analysis every 0.50 s: decoding every frame"
    said = [r for r in caplog.records if "decoding every frame" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not per keyframe
    assert states == []  # late keyframes are not a fault: the camera stays online
    # the switch decoded the kept packets from the first keyframe: the frame 0.5 s in was not lost
    assert [f.index for f in frames][:3] == [0, 13, 26]


def without_keyframes(clip: Path, out: Path) -> Path:
    """`clip` remuxed without its keyframe packets (as a stream joined after its only keyframe)."""
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size and not packet.is_keyframe:
                packet.stream = stream
                dst.mux(packet)
    return out


def test_no_keyframe_for_too_long_reports_degraded(clips, tmp_path) -> None:
    clip = without_keyframes(clips["nokey"], tmp_path / "nokey.mkv")
    states: list[tuple[CameraState, str | None]] = []
    infos: list[avsource.DecodeInfo] = []
    src = FrameSource(camera(clip), threading.Event(), lambda s, r: states.append((s, r)), infos.append)
    with pytest.raises(SourceError, match="no frame could be decoded"):  # the file ends, nothing decodable
        list(src.frames())
    assert len(states) == 1 and states[0][0] is CameraState.DEGRADED  # said once, not per packet
    assert states[0][1].startswith("no keyframe for 6.") and "decoding every frame" in states[0][1]
    assert infos[-1].mode == "full" and infos[-1].keyframe_interval_s is None


def test_keyframes_stopping_falls_back_to_full_decoding(clips) -> None:
    """Only the first frame is a keyframe: analysis continues on fully decoded frames from the kept GOP."""
    _, frames, states, infos = read(camera(clips["nokey"]))
    assert [f.index for f in frames] == [0, 50, 100, 150]  # every 2 s, none lost at the switch
    assert states == [] and infos[-1].mode == "full"
    assert infos[-1].reason.startswith("no keyframe within 3.0") and infos[-1].reason.endswith("decoding every frame")


class FailingHw(decode.Decoder):
    """A 'hardware' decoder (really the CPU) that fails on its second keyframe."""

    def __init__(self, stream, kind="cpu") -> None:
        super().__init__(stream, "cpu")
        self.kind = kind
        self.calls = 0

    def key(self, packet):
        self.calls += 1
        if self.kind != "cpu" and self.calls == 2:
            raise av.error.InvalidDataError(1094995529, "hardware decoder lost")
        return super().key(packet)


def test_hardware_decoder_failing_mid_stream_falls_back_to_cpu(clips, monkeypatch) -> None:
    clip = clips["gop2s"]  # keyframes at frames 0, 50, 100
    monkeypatch.setattr(avsource, "resolve", lambda mode, codec="h264": ("nvdec", None))
    monkeypatch.setattr(avsource, "Decoder", FailingHw)
    src, frames, states, infos = read(camera(clip, analysis_fps=0.5))
    assert [f.index for f in frames] == [0, 100]  # the keyframe it failed on is lost, nothing else
    assert states[0][0] is CameraState.DEGRADED and "nvdec decoder failed" in states[0][1]
    assert "decoding on the CPU" in states[0][1]
    assert infos[-1].decoder == "cpu" and "CPU fallback" in (infos[-1].reason or "")
    assert src.hw_failed  # later sessions start on the CPU
    # set explicitly to that hardware decoder, the session gives up (the capture stage restarts it)
    with pytest.raises(SourceError, match="nvdec decoder failed"):
        read(camera(clip, analysis_fps=0.5, decode="nvdec"))


def test_undecodable_codec_is_a_source_error(clips, monkeypatch) -> None:
    def no_decoder(stream, kind="cpu"):
        raise av.error.DecoderNotFoundError(0, "decoder not found")

    monkeypatch.setattr(avsource, "Decoder", no_decoder)
    with pytest.raises(SourceError, match="camera cam: no decoder for codec 'h264'"):
        read(camera(clips["gop2s"]))


def test_unavailable_hardware_decoder(clips, monkeypatch) -> None:
    decode.unavailable_reason.cache_clear()
    monkeypatch.setattr(decode, "hwdevices_available", lambda: [])
    monkeypatch.setattr(decode, "_m2m_decoders", lambda: [])
    try:
        for mode in ("vaapi", "nvdec", "v4l2m2m"):
            with pytest.raises(decode.DecoderUnavailable) as err:
                decode.resolve(mode)
            assert "\n" not in str(err.value) and str(err.value).startswith(f"decode: {mode} is not available here: ")
        kind, why = decode.resolve("auto")
        assert kind == "cpu" and why and all(k in why for k in ("nvdec:", "vaapi:", "v4l2m2m:"))
        with pytest.raises(SourceError, match="camera cam: decode: vaapi is not available here"):
            read(camera(clips["gop2s"], decode="vaapi"))
    finally:
        decode.unavailable_reason.cache_clear()


def test_status_carries_decode_and_stays_valid() -> None:
    info = avsource.DecodeInfo("full", "cpu", 4.0, "keyframes every 4.00 s, analysis every 2.00 s: decoding every frame")
    raw = Status(venue="v", camera="c", state=CameraState.ONLINE, ts="2026-11-21T19:05:02Z", decode=info.status())
    back = Status.model_validate_json(raw.to_json())
    assert back.decode is not None and back.decode.keyframe_interval_s == 4.0 and back.decode.mode == "full"
    old = Status.model_validate_json(b'{"v":1,"venue":"v","camera":"c","state":"online","ts":"2026-11-21T19:05:02Z"}')
    assert old.decode is None  # an older edge's status is still valid
