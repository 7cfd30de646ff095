"""The MQTT contract between Turnout edge devices, the server and organizers (version 1).

This module is the single source of truth for topics and payloads; edge and server both import it.
`docs/mqtt.md` documents it and `docs/mqtt-v1.schema.json` is generated from these models
(`python -m turnout.contract > docs/mqtt-v1.schema.json`; a test checks they agree).

Topics (``{venue}`` and ``{camera}`` are ids: ``[A-Za-z0-9_-]{1,64}``):

====================================================  =====  ======  ===========================
topic                                                 QoS    retain  publisher -> subscriber
====================================================  =====  ======  ===========================
``turnout/v1/{venue}/{camera}/occupancy``             1      no      edge -> server
``turnout/v1/{venue}/{camera}/status``                1      yes     edge (and its last will)
``turnout/v1/{venue}/alerts/{kind}``                  1      yes     server -> organizers
``turnout/v1/{venue}/{camera}/cmd/snapshot``          1      no      server -> edge
``turnout/v1/{venue}/{camera}/snapshot``              1      no      edge -> server (JPEG, once)
``turnout/v1/{venue}/{camera}/layout``                1      yes     server -> edge (new zones)
``turnout/v1/{venue}/{camera}/layout/result``         1      no      edge -> server
====================================================  =====  ======  ===========================
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

VERSION = 1
PREFIX = f"turnout/v{VERSION}"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_PAYLOAD_BYTES = 64 * 1024
"""Occupancy/status/alert payloads larger than this are rejected unread (snapshots excepted)."""

QOS = 1

Id = Annotated[str, Field(pattern=ID_PATTERN, description="Identifier: letters, digits, '_' or '-'.")]
_ID_RE = re.compile(ID_PATTERN)

SEQ_LIMIT = 2**53
"""``seq`` is below this (exact in a JSON double, fits a signed 64-bit column with room to spare)."""

RESERVED_CAMERA_IDS = frozenset({"alerts", "cmd", "layout", "occupancy", "result", "snapshot", "status"})
"""Topic segments that are never camera ids: ``turnout/v1/{venue}/alerts/...`` is the venue's alert space, and
a camera (broker user ``{venue}/{camera}``) named after a topic segment could write where others read."""


TS_MIN_YEAR, TS_MAX_YEAR = 2000, 2100
"""Timestamps outside these years are a broken clock, not an event (payloads are refused)."""


def check_utc(ts: datetime) -> datetime:
    """``ts`` if it carries the UTC offset and lies in a sane window of years; ValueError otherwise."""
    if ts.tzinfo is None or ts.utcoffset() != UTC.utcoffset(None):
        raise ValueError("ts must carry the UTC offset (…Z or +00:00)")
    if not TS_MIN_YEAR <= ts.year < TS_MAX_YEAR:
        raise ValueError(f"ts year {ts.year} is outside {TS_MIN_YEAR}-{TS_MAX_YEAR - 1}: is the clock set?")
    return ts


def not_a_number(value: object) -> object:
    """Before-validator of ``ts``: a JSON number is not an ISO 8601 string (pydantic would read epoch seconds)."""
    if isinstance(value, int | float):
        raise ValueError("ts must be an ISO 8601 string, not a number")
    return value


def check_camera_id(camera: str) -> str:
    """``camera`` unless it is a reserved topic word (any letter case); ValueError naming it otherwise."""
    if camera.lower() in RESERVED_CAMERA_IDS:
        raise ValueError(
            f"camera id {camera!r} is a reserved topic word; use another (reserved: {sorted(RESERVED_CAMERA_IDS)})"
        )
    return camera



CameraId = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        description="Camera identifier: letters, digits, '_' or '-', not a reserved topic segment.",
        json_schema_extra={"not": {"enum": sorted(RESERVED_CAMERA_IDS)}},
    ),
    AfterValidator(check_camera_id),
]
StreamId = Annotated[str, Field(pattern=ID_PATTERN, description="Stream identity (see `Occupancy.stream`).")]


# --------------------------------------------------------------------------------------------- topics
def occupancy_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/occupancy"


def status_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/status"


def alert_topic(venue: str, kind: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/alerts/{_check_id(kind)}"


def snapshot_request_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/cmd/snapshot"


def snapshot_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/snapshot"


def layout_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/layout"


def layout_result_topic(venue: str, camera: str) -> str:
    return f"{PREFIX}/{_check_id(venue)}/{_check_camera(camera)}/layout/result"


# Subscription filters for the server.
OCCUPANCY_FILTER = f"{PREFIX}/+/+/occupancy"
STATUS_FILTER = f"{PREFIX}/+/+/status"
SNAPSHOT_FILTER = f"{PREFIX}/+/+/snapshot"
LAYOUT_RESULT_FILTER = f"{PREFIX}/+/+/layout/result"

_TOPIC_RE = re.compile(
    r"^turnout/v1/(?P<venue>[A-Za-z0-9_-]{1,64})/(?P<camera>[A-Za-z0-9_-]{1,64})/(?P<kind>occupancy|status|snapshot|layout/result|layout|cmd/snapshot)$"
)


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split a camera topic into ``(venue, camera, kind)``; raise ``ValueError`` if it is not one."""
    m = _TOPIC_RE.match(topic)
    if not m:
        raise ValueError(f"not a Turnout v1 camera topic: {topic!r}")
    if m["camera"] in RESERVED_CAMERA_IDS:
        raise ValueError(f"not a Turnout v1 camera topic (reserved camera id {m['camera']!r}): {topic!r}")
    return m["venue"], m["camera"], m["kind"]


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"invalid id {value!r}: use 1-64 letters, digits, '_' or '-'")
    return value


def _check_camera(value: str) -> str:
    return check_camera_id(_check_id(value))


# ------------------------------------------------------------------------------------------- payloads
class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def utcnow() -> datetime:
    return datetime.now(UTC)


class SectionCount(_Payload):
    """One seating section as seen by one camera in one analysed frame (after hysteresis)."""

    id: Id
    seats: StrictInt = Field(ge=0, le=1_000_000, description="Seats in the section (from the edge config).")
    occupied: StrictInt = Field(ge=0, le=1_000_000, description="Occupied seats; never more than `seats`.")
    people: StrictInt = Field(ge=0, le=1_000_000, description="Persons seen in the section, standing included.")
    taken: list[Id] | None = Field(
        default=None,
        max_length=10_000,
        description="Ids of the occupied seats of the section's seat map (optional, added within v1); "
        "absent without a seat map or from older edges.",
    )

    @model_validator(mode="after")
    def _occupied_within_seats(self) -> SectionCount:
        if self.occupied > self.seats:
            raise ValueError(f"section {self.id}: occupied {self.occupied} exceeds seats {self.seats}")
        if self.taken is not None:
            if len(set(self.taken)) != len(self.taken):
                raise ValueError(f"section {self.id}: a seat id is listed twice in taken")
            if len(self.taken) > self.seats:
                raise ValueError(f"section {self.id}: {len(self.taken)} seats taken exceeds seats {self.seats}")
        return self


class Processing(_Payload):
    """How the numbers were produced, for operators and for the server's health view."""

    fps: float = Field(strict=True, ge=0, le=10_000, description="Analysed frames per second over the last interval.")
    latency_ms: float = Field(strict=True, ge=0, le=3_600_000, description="Capture-to-count latency of this frame.")
    frames: StrictInt = Field(ge=0, description="Frames analysed since the edge started.")
    tiles: StrictInt = Field(ge=1, le=4096, default=1, description="Detector tiles per analysed frame.")
    dropped: StrictInt = Field(ge=0, default=0, description="Messages dropped by the store-and-forward bound.")


class Occupancy(_Payload):
    """Payload of ``turnout/v1/{venue}/{camera}/occupancy``."""

    v: Literal[1] = 1
    venue: Id
    camera: CameraId
    seq: StrictInt = Field(ge=0, lt=SEQ_LIMIT, description="Strictly increasing within a stream, below 2^53; see `stream`.")
    stream: StreamId | None = Field(
        default=None,
        description="Identity of the seq counter (one per edge state file): a new stream restarts the seq order.",
    )
    ts: datetime = Field(description="Time of the analysed frame, UTC, ISO 8601.")
    sections: list[SectionCount] = Field(max_length=1000)
    model: str = Field(max_length=128, description="Detector model name.")
    processing: Processing

    @field_validator("ts")
    @classmethod
    def _utc(cls, ts: datetime) -> datetime:
        return check_utc(ts)

    _ts_string = field_validator("ts", mode="before")(not_a_number)

    @model_validator(mode="after")
    def _unique_sections(self) -> Occupancy:
        ids = [s.id for s in self.sections]
        if len(ids) != len(set(ids)):
            raise ValueError("section ids must be unique within one message")
        return self


class CameraState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class CountCalibration(_Payload):
    """How this camera's counts compare with manual counts (measured by ``turnout edge calibrate``).

    ``bias`` is the mean of count / true count over the calibration frames (0.8: the camera sees 80 % of
    the people); ``spread`` is the standard deviation of that ratio. The server divides counts by ``bias``
    and carries ``spread`` into the forecast; a camera without calibration counts as +-25 % of unknown sign.
    """

    bias: float = Field(strict=True, gt=0.2, lt=5.0, description="Mean of count / true count on the calibration frames.")
    spread: float = Field(strict=True, ge=0.0, lt=2.0, description="Standard deviation of count / true count.")
    frames: StrictInt = Field(ge=1, le=1_000_000, description="Calibration frames (manual counts) behind the figures.")
    at: datetime | None = Field(default=None, description="When the calibration was made, UTC.")


class DecodeStatus(_Payload):
    """How the edge decodes this camera's video (optional in ``status``; absent from older edges)."""

    mode: Literal["keyframes", "full"] = Field(
        description="keyframes: only keyframes are decoded; full: every frame is decoded."
    )
    decoder: Literal["cpu", "vaapi", "nvdec", "v4l2m2m"] = Field(description="The decoder in use.")
    keyframe_interval_s: float | None = Field(
        default=None, ge=0.0, le=3600.0, description="Measured seconds between keyframes; absent until measured."
    )
    reason: str | None = Field(
        default=None, max_length=300, description="Why frames are fully decoded or a hardware decoder is not used."
    )


class Status(_Payload):
    """Payload of ``turnout/v1/{venue}/{camera}/status`` (retained; ``offline`` is the last will)."""

    v: Literal[1] = 1
    venue: Id
    camera: Id
    state: CameraState
    ts: datetime
    reason: str | None = Field(default=None, max_length=500)
    calibration: CountCalibration | None = Field(
        default=None, description="Counting error measured against manual counts; absent: uncalibrated."
    )
    decode: DecodeStatus | None = Field(default=None, description="How the video is decoded; absent from older edges.")

    @field_validator("ts")
    @classmethod
    def _utc(cls, ts: datetime) -> datetime:
        return check_utc(ts)

    _ts_string = field_validator("ts", mode="before")(not_a_number)


class AlertKind(StrEnum):
    OVERFLOW_DECISION = "overflow_decision"
    SECTION_OVER_CAPACITY = "section_over_capacity"
    CAMERA_STALE = "camera_stale"
    CAMERA_OFFLINE = "camera_offline"


ALERT_ID_MAX = 255
"""Alert ids are ``{scope}:{kind}[:{subject}]`` of 64-character ids: at most 64 + 1 + 21 + 1 + 64 = 151 characters
(issue 8, row 8), within this bound and the alert id columns of the database (255)."""


class Alert(_Payload):
    """Payload of ``turnout/v1/{venue}/alerts/{kind}`` (retained, published by the server)."""

    v: Literal[1] = 1
    id: str = Field(
        max_length=ALERT_ID_MAX,
        description="Stable id (`{scope}:{kind}` or `{scope}:{kind}:{subject}`): the same alert is never re-sent under "
        "a new id.",
    )
    venue: Id
    event: str | None = Field(default=None, max_length=64)
    kind: AlertKind
    state: str = Field(max_length=64, description="e.g. cancel_overflow, overflow_needed, active, cleared")
    severity: Literal["info", "warning", "critical"]
    ts: datetime
    message: str = Field(max_length=2000, description="Human-readable summary for organizers.")
    figures: dict[str, float | int | str | None] = Field(default_factory=dict, description="Numbers behind it.")


class SnapshotRequest(_Payload):
    v: Literal[1] = 1
    request_id: str = Field(max_length=64)
    draw: bool = Field(default=True, description="Draw sections, seats and detections on the image.")


class LayoutResult(_Payload):
    v: Literal[1] = 1
    venue: Id
    camera: Id
    ok: bool
    ts: datetime
    errors: list[str] = Field(default_factory=list)
    request_id: str | None = Field(default=None, max_length=64, description="Echo of `Layout.request_id`.")


MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
"""Largest JPEG an edge sends as a snapshot (before base64)."""


class Snapshot(_Payload):
    """Payload of ``turnout/v1/{venue}/{camera}/snapshot``: one JPEG, sent once per request, never stored."""

    v: Literal[1] = 1
    venue: Id
    camera: Id
    request_id: str = Field(max_length=64)
    ts: datetime
    width: StrictInt | None = Field(default=None, ge=1, le=16384)
    height: StrictInt | None = Field(default=None, ge=1, le=16384)
    content_type: Literal["image/jpeg"] = "image/jpeg"
    jpeg_b64: str | None = Field(
        default=None, max_length=(MAX_SNAPSHOT_BYTES * 4) // 3 + 4, description="Base64 of the JPEG bytes."
    )
    error: str | None = Field(default=None, max_length=500, description="Why there is no image, if none.")
    layout: dict[str, Any] | None = Field(
        default=None, description="The camera's zones now (same fields as `Layout`), for editing."
    )


class Layout(_Payload):
    """Payload of ``turnout/v1/{venue}/{camera}/layout`` (retained): new zones for one camera.

    ``sections`` and ``exclude`` use the edge config's format (`edge.config.Section`); the edge validates
    them merged into its camera config and answers on ``layout/result``.
    """

    v: Literal[1] = 1
    request_id: str = Field(max_length=64)
    coordinates: Literal["pixels", "normalized"] = "pixels"
    anchor: str | None = Field(default=None, max_length=32)
    sections: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    exclude: list[list[tuple[float, float]]] = Field(default_factory=list, max_length=1000)


# ------------------------------------------------------------------------------------------- decoding
class PayloadError(ValueError):
    """A message that does not follow the contract; the text says what is wrong."""


def decode(model: type[_Payload], raw: bytes) -> Any:
    """Parse and validate one payload; raise `PayloadError` naming the problem."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValueError as exc:
        raise PayloadError(f"{model.__name__} payload invalid: {exc}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in Turnout payloads")


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of every v1 payload, keyed by message name."""
    schemas = {
        name: model.model_json_schema()
        for name, model in {
            "occupancy": Occupancy,
            "status": Status,
            "alert": Alert,
            "snapshot_request": SnapshotRequest,
            "layout_result": LayoutResult,
            "snapshot": Snapshot,
            "layout": Layout,
        }.items()
    }
    # Each message schema stays self-contained; its nested types are also hoisted to the top level so
    # that "#/$defs/SectionCount" resolves when a message is referenced through this document's root.
    defs: dict[str, Any] = dict(schemas)
    for schema in schemas.values():
        for name, sub in schema.get("$defs", {}).items():
            defs.setdefault(name, sub)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://turnout.invalid/schema/mqtt-v1.json",
        "title": "Turnout MQTT contract v1",
        "$defs": defs,
    }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
