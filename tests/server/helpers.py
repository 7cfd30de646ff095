"""Helpers for server tests: venues, users, a real MQTT publisher/subscriber, waiting."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from server.auth import Role, create_token, create_user
from server.db.session import Database
from server.venues import EventIn, OverflowIn, SectionIn, VenueIn, save_event, save_venue
from tests.conftest import Broker
from turnout.contract import (
    CountCalibration,
    Occupancy,
    Processing,
    SectionCount,
    Status,
    occupancy_topic,
    status_topic,
)


def venue_spec(venue: str, n_cameras: int, n_sections: int, seats: int) -> VenueIn:
    """``n_sections`` sections sharing ``seats`` evenly, round-robin over cameras; every 3rd has a backup."""
    cams = [f"cam{i}" for i in range(n_cameras)]
    per = [seats // n_sections + (1 if i < seats % n_sections else 0) for i in range(n_sections)]
    sections = []
    for i in range(n_sections):
        owner = cams[i % n_cameras]
        backup = [cams[(i + 1) % n_cameras]] if i % 3 == 2 and n_cameras > 1 else []
        sections.append(SectionIn(id=f"s{i:02d}", name=f"Section {i}", seats=per[i], cameras=[owner, *backup]))
    return VenueIn(id=venue, name=f"Arena {venue}", sections=sections, cameras=[{"id": c} for c in cams])


def event_spec(
    venue: str, start: datetime, capacity: int, *, threshold: float = 0.9, deadline_min: float = 30, event: str = "ev"
) -> EventIn:
    return EventIn(
        id=event,
        venue=venue,
        name="Test rally",
        doors_open=start - timedelta(hours=4),
        start=start,
        capacity=capacity,
        overflow=OverflowIn(
            name="Outdoor stage", capacity=40000, deadline=start - timedelta(minutes=deadline_min), threshold=threshold
        ),
    )


def setup_venue(db: Database, venue: VenueIn, event: EventIn | None) -> None:
    with db.session() as s:
        save_venue(s, venue)
        s.flush()
        if event is not None:
            save_event(s, event)
        s.commit()


def make_user(db: Database, role: Role) -> str:
    """A user of ``role`` and a token for it."""
    with db.session() as s:
        name = f"{role.value}-{uuid.uuid4().hex[:6]}"
        create_user(s, name, role, "correct horse battery")
        return create_token(s, name)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Publisher:
    """A real MQTT client publishing edge messages."""

    def __init__(self, broker: Broker, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.seq: dict[str, int] = {}

    def occupancy(
        self, venue: str, camera: str, ts: datetime, sections: dict[str, tuple[int, int, int]], seq: int | None = None
    ) -> int:
        """Publish ``{section: (seats, occupied, people)}``; returns the seq used."""
        if seq is None:
            seq = self.seq.get(camera, 0) + 1
        self.seq[camera] = max(seq, self.seq.get(camera, 0))
        msg = Occupancy(
            venue=venue,
            camera=camera,
            seq=seq,
            ts=ts,
            sections=[SectionCount(id=k, seats=s, occupied=o, people=p) for k, (s, o, p) in sections.items()],
            model="yolo11n",
            processing=Processing(fps=5, latency_ms=40, frames=seq),
        )
        self.raw(occupancy_topic(venue, camera), msg.to_json())
        return seq

    def status(
        self, venue: str, camera: str, state: str, ts: datetime, calibration: CountCalibration | None = None
    ) -> None:
        msg = Status(venue=venue, camera=camera, state=state, ts=ts, calibration=calibration)
        self.raw(status_topic(venue, camera), msg.to_json(), retain=True)

    def raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """An independent MQTT subscriber collecting JSON messages."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10), "subscriber did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:  # a retained message being deleted (an empty payload), not a message
            return
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for _, m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
