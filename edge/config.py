"""The edge device's single YAML config, validated with pydantic.

`load_config(path)` returns an `EdgeConfig` or raises `ConfigError`, whose message names the file,
the field and what was expected. See deploy/edge-vtest.yaml and deploy/edge-classroom.yaml.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from shapely.geometry import Point as ShapelyPoint
from shapely.geometry import Polygon
from shapely.validation import explain_validity

from turnout.contract import ID_PATTERN, CountCalibration, check_camera_id
from turnout.paths import UnsetVariableError, expand_config_vars

Id = Annotated[str, Field(pattern=ID_PATTERN)]
AUTO_DECODE_SIDE = 1280
"""`decode_size: auto` in full-frame mode: frames are scaled in the decoder to this longest side (2x a 640 model)."""
Point = tuple[float, float]


def _check_polygon(points: list[Point], what: str) -> list[Point]:
    """At least 3 points and not crossing itself (a bow-tie would count people in the wrong place)."""
    if len(points) < 3:
        raise ValueError(f"{what} needs at least 3 points, got {len(points)}")
    poly = Polygon(points)
    if not poly.is_valid or poly.area == 0:
        raise ValueError(f"{what} crosses itself or has no area: {explain_validity(poly)}; list corners in order")
    return points


class ConfigError(ValueError):
    """The config file cannot be used; ``str(err)`` is the message to show the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------------------------------------ MQTT
class TlsConfig(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="Skip hostname verification (testing only).")


class QueueConfig(_Strict):
    """Store-and-forward bound: messages kept on disk while the broker is unreachable."""

    max_messages: int = Field(100_000, ge=10)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"


class MqttConfig(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    client_id_prefix: str = "turnout-edge"
    username: str | None = None
    password_env: str | None = Field(None, description="Name of the environment variable with the password.")
    password_file: Path | None = None
    tls: TlsConfig | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: int = Field(30, ge=5, le=3600)
    interval_s: float = Field(5.0, gt=0, le=3600, description="Publish at least this often.")
    min_change: int = Field(1, ge=1, description="Publish at once when a section changes by this much.")
    queue: QueueConfig = QueueConfig()

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl", "ws", "wss") or not u.hostname:
            raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            u.port  # noqa: B018 - raises for a port outside 0..65535
        except ValueError:
            raise ValueError(f"port out of range in {url!r} (1..65535)") from None
        return url

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlparse(self.url)
        return u.port or (8883 if u.scheme in ("mqtts", "ssl", "wss") else 1883)

    @property
    def use_tls(self) -> bool:
        return urlparse(self.url).scheme in ("mqtts", "ssl", "wss") or self.tls is not None

    def password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            return self.password_file.read_text().strip()
        return None


# -------------------------------------------------------------------------------------------- detector
class ModelConfig(_Strict):
    path: str | None = Field(None, description="Model name or .onnx path; default: --model, TURNOUT_MODEL, models/.")
    threads: int = Field(2, ge=1, le=64, description="Inference threads (onnxruntime intra-op, OpenVINO CPU).")
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="Inference runtime; both read the same .onnx file (openvino: the openvino extra)."
    )
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32",
        description="bf16: OpenVINO on hardware with BF16 (AVX512_BF16/AMX); int8: a model from "
        "`turnout models quantize` (checked when the model loads).",
    )
    fallback: Literal["cpu"] | None = Field(
        None,
        description="cpu: when the runtime/provider/device is unavailable at start, run onnxruntime on the CPU "
        "(same file) and report the cameras degraded; unset: a one-line error, exit 2.",
    )
    providers: list[Literal["cpu", "cuda", "tensorrt", "openvino"]] = Field(
        default_factory=lambda: ["cpu"],
        min_length=1,
        description="onnxruntime execution providers, in order of preference (CUDA, TensorRT, OpenVINO, CPU).",
    )
    device: str = Field("CPU", pattern=r"^[A-Z]+(\.\d+)?$", description="OpenVINO device: CPU, GPU, NPU ...")
    max_batch: int | None = Field(
        4,
        ge=1,
        le=1024,
        description="Most tiles per inference call (memory grows ~34-90 MB per tile in a call); null: all at once.",
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        """Provider names in any case: CUDA, cuda, CUDAExecutionProvider."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [v.lower().removesuffix("executionprovider") if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _combination(self) -> ModelConfig:
        if self.precision == "bf16" and self.runtime != "openvino":
            raise ValueError("precision bf16 needs runtime: openvino (onnxruntime runs this model in fp32 only)")
        if self.runtime == "openvino" and self.providers != ["cpu"]:
            raise ValueError("providers apply to runtime: onnxruntime; with openvino choose `device` (CPU, GPU, NPU)")
        if len(set(self.providers)) != len(self.providers):
            raise ValueError("providers are listed twice")
        return self


class TileConfig(_Strict):
    """High-resolution tiling: the frame is upscaled by `scale`, cut into overlapping `size` tiles."""

    size: int = Field(640, ge=160, le=4096, description="Tile side in pixels of the scaled frame (model input).")
    overlap: float = Field(0.2, ge=0.0, lt=0.9, description="Fraction of a tile shared with its neighbour.")
    scale: float = Field(3.0, gt=0.1, le=8.0, description="Upscale factor applied to the frame before tiling.")
    full_frame: bool = Field(False, description="Also run one full-frame pass (catches people larger than a tile).")
    merge_iou: float = Field(
        0.5, gt=0.0, le=1.0, description="Boxes from different tiles with this IoU are one person."
    )
    merge_ios: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="A box cut by a tile edge inside another tile's box by this share is a fragment.",
    )
    roi: bool = Field(True, description="Run only tiles near a section (outside excluded areas); skip the rest.")
    roi_margin: float = Field(
        0.25,
        ge=0.0,
        le=2.0,
        description="Tiles within this fraction of a tile side of a section still run (people on its edge).",
    )


class GateConfig(_Strict):
    """Static-scene gating of tiles (edge/gating.py): a tile that barely changed reuses its last detections."""

    enabled: bool | None = Field(
        None, description="null: on for seated cameras (tiled, anchor center/top_center), off otherwise."
    )
    threshold: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of a tile's pixels that must change for it to run again."
    )
    pixel_delta: int = Field(
        24, ge=1, le=255, description="A pixel (grey, tile shrunk to 64x64) changed by more than this has changed."
    )
    refresh_s: float = Field(30.0, gt=0.0, le=3600.0, description="Every tile runs again at least this often.")


class DetectConfig(_Strict):
    mode: Literal["full", "tiled"] = "full"
    conf: float = Field(0.25, gt=0.0, lt=1.0)
    iou: float = Field(0.7, gt=0.0, le=1.0)
    max_det: int = Field(300, ge=1, le=10_000)
    tiles: TileConfig = TileConfig()
    gate: GateConfig = GateConfig()


# ------------------------------------------------------------------------------------------ zones
class Anchor(StrEnum):
    """Which point of a person's box decides where the person is."""

    BOTTOM_CENTER = "bottom_center"  # feet: standing crowds seen from the side
    CENTER = "center"  # seated people seen from above/front: the torso
    TOP_CENTER = "top_center"  # heads: tiered seating where lower bodies are hidden


class Seat(_Strict):
    id: Id
    point: Point | None = None
    polygon: list[Point] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Seat:
        if (self.point is None) == (self.polygon is None):
            raise ValueError("a seat needs exactly one of `point` or `polygon`")
        if self.polygon is not None:
            _check_polygon(self.polygon, f"seat {self.id} polygon")
        return self


class Section(_Strict):
    id: Id
    seats: int = Field(ge=0, le=1_000_000)
    polygon: list[Point]
    seat_map: list[Seat] = Field(default_factory=list, description="Optional individual seats.")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, polygon: list[Point]) -> list[Point]:
        return _check_polygon(polygon, "polygon")

    @model_validator(mode="after")
    def _seat_map(self) -> Section:
        if self.seat_map and len(self.seat_map) > self.seats:
            raise ValueError(f"seat_map lists {len(self.seat_map)} seats but seats is {self.seats}")
        ids = [s.id for s in self.seat_map]
        if len(ids) != len(set(ids)):
            raise ValueError("seat ids must be unique within a section")
        area = Polygon(self.polygon).buffer(1e-9)
        for seat in self.seat_map:
            inside = area.contains(ShapelyPoint(seat.point)) if seat.point else area.contains(Polygon(seat.polygon))
            if not inside:
                raise ValueError(f"seat {seat.id} lies outside section {self.id}'s polygon (it could never be taken)")
        return self


class Hysteresis(_Strict):
    window: int = Field(5, ge=1, le=100, description="Analysis frames a section count is smoothed over (median).")
    seat_on: int = Field(2, ge=1, le=100, description="Consecutive hits before a seat turns occupied.")
    seat_off: int = Field(3, ge=1, le=100, description="Consecutive misses before a seat turns free.")


class ReferenceConfig(_Strict):
    """Empty-seat reference (edge/reference.py, edge/seatref.py; docs/detection.md): captured by
    `turnout edge reference` or daily at `capture_at`; used for seats with polygons once a reference exists."""

    mode: Literal["detection", "reference", "both"] = Field(
        "both", description="Seat occupied from: detections only, the reference only, or either (when one exists)."
    )
    similarity_min: float = Field(0.45, ge=-1.0, le=1.0, description="Below this structure similarity a seat changed.")
    edge_gain_min: float = Field(0.0, ge=-5.0, le=5.0, description="... and its log edge-energy ratio is above this.")
    capture_frames: int = Field(9, ge=1, le=200, description="Frames captured for a reference (per-pixel median).")
    capture_interval_s: float = Field(1.0, ge=0.0, le=600, description="Seconds between captured frames (live sources).")
    max_people: int = Field(2, ge=0, le=1_000_000, description="A capture with more people in the sections is refused.")
    capture_at: str | None = Field(
        None, description="Daily automatic capture at this device-local time HH:MM (before doors); off when unset."
    )
    adapt_rate: float = Field(0.05, ge=0.0, le=1.0, description="Per-frame blend of confidently empty seats (0: off).")
    adapt_after_s: float = Field(120.0, ge=0.0, description="A seat adapts only after this long with no evidence.")
    adapt_similarity: float = Field(0.7, ge=-1.0, le=1.0, description="... and only while at least this similar.")

    @field_validator("capture_at")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.strptime(value, "%H:%M")
            except ValueError:
                raise ValueError(f"expected a time of day HH:MM (e.g. 17:30), got {value!r}") from None
        return value


def _calibration(value: object) -> CountCalibration | None:
    """A camera's `calibration` block (written by `turnout edge calibrate`), checked against the contract."""
    if value is None or isinstance(value, CountCalibration):
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a mapping {bias, spread, frames, at} (written by `turnout edge calibrate`)")
    at = value.get("at")
    if isinstance(at, datetime) and at.tzinfo is None:
        value = {**value, "at": at.replace(tzinfo=UTC)}  # YAML timestamps without an offset are UTC
    try:
        return CountCalibration.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'calibration'}: "
            + ("unknown field (expected bias, spread, frames, at)" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ValueError(
            f"{problems} (bias = mean of count / true count, 0.2..5; spread = its standard deviation, 0..2; "
            "frames >= 1; re-run `turnout edge calibrate` to measure them)"
        ) from None


class CameraConfig(_Strict):
    id: Id

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, cid: str) -> str:
        return check_camera_id(cid)
    source: str | int = Field(description="Video file, rtsp://, http(s):// (MJPEG) URL, or USB index.")
    loop: bool = Field(True, description="Video files: start again at the end.")
    realtime: bool = Field(True, description="Video files: play at native speed (false: as fast as possible).")
    analysis_fps: float = Field(2.0, gt=0, le=120, description="Frames analysed per second.")
    reconnect_max_s: float = Field(5.0, ge=0.5, le=600, description="Cap of the reconnect backoff.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP: RTP over TCP (robust) or UDP.")
    decode: Literal["auto", "cpu", "vaapi", "nvdec", "v4l2m2m"] = Field(
        "auto", description="Video decoder: auto (hardware when present, else CPU), cpu, or one hardware decoder."
    )
    keyframe_only: bool = Field(
        True, description="Decode only keyframes when they come at least as often as the analysis needs."
    )
    keyframe_timeout: float = Field(
        3.0, ge=1.0, le=100.0, description="No keyframe for this many analysis intervals: degraded, decode every frame."
    )
    decode_size: int | Literal["auto", "native"] = Field(
        "auto",
        description="Longest side of decoded frames: auto (1280 in full mode, native when tiled), native, or pixels.",
    )
    coordinates: Literal["pixels", "normalized"] = "pixels"
    anchor: Anchor = Anchor.BOTTOM_CENTER
    detect: DetectConfig = DetectConfig()
    sections: list[Section] = Field(min_length=1)
    exclude: list[list[Point]] = Field(default_factory=list, description="Areas ignored (stage, aisles, screens).")
    hysteresis: Hysteresis = Hysteresis()
    reference: ReferenceConfig = ReferenceConfig()
    calibration: Annotated[CountCalibration | None, BeforeValidator(_calibration)] = Field(
        None, description="Counting error vs manual counts, measured by `turnout edge calibrate`; sent in status."
    )

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, areas: list[list[Point]]) -> list[list[Point]]:
        for i, poly in enumerate(areas):
            _check_polygon(poly, f"exclude[{i}]")
        return areas

    @field_validator("decode_size")
    @classmethod
    def _decode_size(cls, size: int | str) -> int | str:
        if isinstance(size, int) and not 160 <= size <= 8192:
            raise ValueError("expected auto, native or a longest side of 160..8192 pixels")
        return size

    @model_validator(mode="after")
    def _checks(self) -> CameraConfig:
        ids = [s.id for s in self.sections]
        if len(ids) != len(set(ids)):
            raise ValueError("section ids must be unique within a camera")
        if self.coordinates == "normalized":
            pts = [p for s in self.sections for p in s.polygon] + [p for a in self.exclude for p in a]
            pts += [p for s in self.sections for seat in s.seat_map for p in (seat.polygon or [seat.point])]
            if any(not (0.0 <= c <= 1.0) for p in pts for c in p):
                raise ValueError("normalized coordinates must lie within 0..1")
        return self

    @property
    def gating(self) -> bool:
        """Static-scene gating on? ``detect.gate.enabled``, by default on for seated cameras (tiled, not feet)."""
        if self.detect.gate.enabled is not None:
            return self.detect.gate.enabled and self.detect.mode == "tiled"
        return self.detect.mode == "tiled" and self.anchor != Anchor.BOTTOM_CENTER

    @property
    def decode_side(self) -> int | None:
        """Longest side frames are scaled to in the decoder, or None for the native size."""
        if self.decode_size == "native" or (self.decode_size == "auto" and self.detect.mode == "tiled"):
            return None
        return AUTO_DECODE_SIDE if self.decode_size == "auto" else int(self.decode_size)

    @property
    def source_kind(self) -> Literal["file", "rtsp", "http", "stream", "usb"]:
        """``usb`` (index or /dev/video*), ``rtsp``, ``http`` (MJPEG/HLS), other ``scheme://`` (FFmpeg), ``file``."""
        src = str(self.source)
        if isinstance(self.source, int) or src.isdigit() or src.startswith("/dev/video"):
            return "usb"
        scheme = urlparse(src).scheme.lower()
        if scheme in ("rtsp", "rtsps"):
            return "rtsp"
        if scheme in ("http", "https"):
            return "http"
        if "://" in src:
            return "stream"  # rtmp://, udp://, srt:// ...: whatever FFmpeg can open
        return "file"


class EdgeConfig(_Strict):
    venue: Id
    device: Id = "edge"
    state_dir: Path = Field(Path("var/edge"), description="Store-and-forward queue and seq counters.")
    status_interval_s: float = Field(10.0, gt=0, description="Console status line period.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on this port (off when unset; edge/metrics.py)."
    )
    metrics_bind: str = Field("0.0.0.0", description="Address the metrics port listens on (127.0.0.1: local only).")
    mqtt: MqttConfig = MqttConfig()
    model: ModelConfig = ModelConfig()
    cameras: list[CameraConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> EdgeConfig:
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError("camera ids must be unique")
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise ConfigError(f"no camera {camera_id!r} in config; cameras: {', '.join(c.id for c in self.cameras)}")


# ------------------------------------------------------------------------------------------- loading
def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid config ({exc.error_count()} problem{'s' * (exc.error_count() > 1)}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see deploy/edge-vtest.yaml for the format)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>", base_dir: Path | None = None) -> EdgeConfig:
    """Validate already-parsed YAML/JSON data (``${VAR}`` expanded); relative file paths are taken from
    `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        data = expand_config_vars(data)
    except UnsetVariableError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        cfg = EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    return cfg


def load_config(path: str | Path) -> EdgeConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        if mark := getattr(exc, "problem_mark", None):
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_config(data, str(path), base_dir=path.parent)


def _resolve_paths(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    """Relative files (videos, state_dir, password/TLS files, model path) are relative to the config file's
    folder; ~ is expanded (${VAR} already was, by `expand_config_vars`)."""
    cams = []
    for cam in cfg.cameras:
        src = cam.source
        if cam.source_kind == "file":
            expanded = Path(str(src)).expanduser()
            if not expanded.is_absolute():
                expanded = (base / expanded).resolve()
            src = str(expanded)
        cams.append(cam.model_copy(update={"source": src}))
    def rel(path: Path | str | None) -> Path | None:
        if path is None:
            return None
        p = Path(str(path)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    mqtt = cfg.mqtt.model_copy(update={"password_file": rel(cfg.mqtt.password_file)})
    if cfg.mqtt.tls is not None:
        tls = cfg.mqtt.tls
        mqtt = mqtt.model_copy(
            update={
                "tls": tls.model_copy(
                    update={"ca_file": rel(tls.ca_file), "cert_file": rel(tls.cert_file), "key_file": rel(tls.key_file)}
                )
            }
        )
    model = cfg.model
    if model.path and ("/" in model.path or model.path.endswith(".onnx")):
        candidate = rel(model.path)
        if candidate is not None and candidate.is_file():
            model = model.model_copy(update={"path": str(candidate)})
    return cfg.model_copy(update={"cameras": cams, "state_dir": rel(cfg.state_dir), "mqtt": mqtt, "model": model})
