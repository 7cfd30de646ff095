"""The in-memory live state of every venue and event, and MQTT ingest into it.

`LiveState.lock` guards everything here. Ingest (the MQTT network thread) holds it for one message;
`server.live.snapshot.take` holds it while copying one event's figures; nothing slow runs under it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.clock import Clock
from server.decision import DecisionMemory
from server.sequence import SeqMark, accept
from turnout.contract import (
    CameraState,
    CountCalibration,
    Occupancy,
    PayloadError,
    Status,
    decode,
    parse_topic,
)

log = logging.getLogger(__name__)


@dataclass
class Reading:
    occupied: int
    people: int
    seats: int
    ts: datetime
    received: datetime
    taken: frozenset[str] | None = None
    """Seat-map ids of the occupied seats (``SectionCount.taken``), when the edge sends them."""


@dataclass
class CameraLive:
    id: str
    name: str = ""
    state: str = "unknown"  # unknown | online | degraded | offline (from status / messages)
    status_ts: datetime | None = None
    last_seen: datetime | None = None
    last_seq: int | None = None
    status_state: str | None = None  # state of the last status message (to drop exact repeats)
    calibration: CountCalibration | None = None
    last_stream: str | None = None
    prev_stream: str | None = None
    """The stream retired by the current one ("" an old edge without stream ids; None none yet)."""


@dataclass
class SectionCfg:
    id: str
    name: str
    seats: int
    cameras: list[str]
    kind: str = "seats"


@dataclass
class VenueLive:
    id: str
    name: str
    sections: dict[str, SectionCfg] = field(default_factory=dict)
    cameras: dict[str, CameraLive] = field(default_factory=dict)
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    dirty: set[tuple[str, str]] = field(default_factory=set)
    dirty_cameras: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class SeriesPoint:
    """One point of an event's attendance series (event time)."""

    ts: datetime
    attendance: int
    queue: int = 0
    coverage: float = 1.0


@dataclass(frozen=True)
class EventInfo:
    """What the database says about an event (changes only on reload)."""

    id: str
    venue_id: str
    name: str
    doors_open: datetime
    start: datetime
    capacity: int
    expected_show_up: float | None
    overflow_name: str | None
    overflow_capacity: int | None
    overflow_deadline: datetime | None
    overflow_threshold: float | None
    timezone: str = "UTC"
    """The venue's IANA time zone: the dashboard and reports show clock times in it."""


@dataclass
class EventLive:
    info: EventInfo
    registrations: int = 0
    suspect: int = 0
    suspect_share: float = 0.0
    decision: DecisionMemory | None = None
    decision_figures: dict[str, Any] = field(default_factory=dict)
    """Figures of the last evaluation (what the decision rests on now), shown live and sent with alerts."""
    history: deque[SeriesPoint] = field(default_factory=lambda: deque(maxlen=4000))
    last_sample: datetime | None = None
    forecast: dict[str, Any] | None = None
    """The last evaluation's forecast (`FinalForecast.as_dict()`), for the API."""


class LiveState:
    """Venues, cameras, readings and events, and the ingest of MQTT messages into them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.venues: dict[str, VenueLive] = {}
        self.events: dict[str, EventLive] = {}
        self.counters: Counter[str] = Counter()
        self.version = 0
        self._observers: list[Callable[[Occupancy], None]] = []
        self._on_change: Callable[[], None] = lambda: None
        self._last_log = 0.0

    def on_change(self, callback: Callable[[], None]) -> None:
        self._on_change = callback

    def observe(self, callback: Callable[[Occupancy], None]) -> None:
        """Call ``callback(message)`` after each accepted occupancy message is in the live state."""
        self._observers.append(callback)

    # ------------------------------------------------------------------------------- ingest
    def handle(self, topic: str, raw: bytes) -> None:
        """Ingest one MQTT message (occupancy or status). Never raises: bad input is counted and logged."""
        self.counters["received"] += 1
        try:
            venue_id, camera_id, kind = parse_topic(topic)
        except ValueError:
            self.reject("bad_topic", topic, "not a camera topic")
            return
        try:
            if kind == "occupancy":
                self._ingest_occupancy(venue_id, camera_id, decode(Occupancy, raw))
            elif kind == "status":
                self._ingest_status(venue_id, camera_id, decode(Status, raw))
            else:
                self.counters["ignored"] += 1
        except PayloadError as exc:
            self.reject("malformed", topic, str(exc))
        except Exception:  # a bug must not stop the ingest thread
            self.counters["errors"] += 1
            log.exception("ingest error on %s", topic)

    def reject(self, reason: str, topic: str, detail: str) -> None:
        self.counters[reason] += 1
        now = time.monotonic()
        if now - self._last_log > 5.0:
            self._last_log = now
            log.warning(
                "rejected message on %s (%s): %s [%d so far]", topic, reason, detail[:300], self.counters[reason]
            )

    def _ingest_occupancy(self, venue_id: str, camera_id: str, msg: Occupancy) -> None:
        if msg.venue != venue_id or msg.camera != camera_id:
            self.reject("malformed", f"{venue_id}/{camera_id}", "payload venue/camera differ from the topic's")
            return
        now = self.clock.now()
        with self.lock:
            venue = self.venues.get(venue_id)
            if venue is None:
                self.counters["unknown_venue"] += 1
                return
            cam = venue.cameras.get(camera_id)
            if cam is None:
                self.reject("unknown_camera", f"{venue_id}/{camera_id}", "camera not configured for venue")
                return
            mark = SeqMark(cam.last_stream, cam.last_seq, cam.prev_stream) if cam.last_seq is not None else None
            ok, seen = accept(mark, msg.stream, msg.seq)  # the documented rule (docs/mqtt.md, server.sequence)
            if not ok:
                self.counters["duplicate_or_old"] += 1
                return
            if mark is not None and seen.stream != mark.stream:
                self.counters["new_stream"] += 1
            cam.last_stream, cam.last_seq, cam.prev_stream = seen.stream, seen.seq, seen.retired
            cam.last_seen = now
            if cam.state in ("unknown", CameraState.OFFLINE.value):
                cam.state = CameraState.ONLINE.value
            venue.dirty_cameras.add(camera_id)
            for sc in msg.sections:
                cfg = venue.sections.get(sc.id)
                if cfg is None or camera_id not in cfg.cameras:
                    self.counters["unknown_section"] += 1
                    continue
                occupied = min(sc.occupied, cfg.seats)
                taken = frozenset(sc.taken) if sc.taken is not None else None
                venue.readings[(sc.id, camera_id)] = Reading(occupied, sc.people, sc.seats, msg.ts, now, taken)
                venue.dirty.add((sc.id, camera_id))
            self.counters["accepted"] += 1
            self.version += 1
        for obs in self._observers:
            obs(msg)
        self._on_change()

    def _ingest_status(self, venue_id: str, camera_id: str, msg: Status) -> None:
        if msg.venue != venue_id or msg.camera != camera_id:
            self.reject("malformed", f"{venue_id}/{camera_id}", "payload venue/camera differ from the topic's")
            return
        with self.lock:
            venue = self.venues.get(venue_id)
            cam = venue.cameras.get(camera_id) if venue else None
            if cam is None:
                self.counters["unknown_camera"] += 1
                return
            # In arrival order (the broker keeps it per topic): the edge's last will carries the ts of its
            # CONNECT, older than the `online` it sent after, yet it is the newer news. Only repeats drop.
            if cam.status_ts == msg.ts and cam.status_state == msg.state.value:
                self.counters["duplicate_or_old"] += 1
                return
            cam.status_ts, cam.status_state = msg.ts, msg.state.value
            cam.state = msg.state.value
            if msg.calibration is not None or msg.state != CameraState.OFFLINE:
                cam.calibration = msg.calibration  # the last will carries none: keep what the edge said
            if msg.state != CameraState.OFFLINE:
                seen = min(msg.ts, self.clock.now())  # an old retained status is no sign of life now
                if cam.last_seen is None or seen > cam.last_seen:
                    cam.last_seen = seen
            assert venue is not None
            venue.dirty_cameras.add(camera_id)
            self.counters["status"] += 1
            self.version += 1
        self._on_change()
