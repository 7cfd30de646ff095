"""Test helpers: an independent MQTT subscriber that records what it receives, and occupancy messages."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from turnout.contract import Occupancy, Processing, SectionCount, utcnow


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Recorder:
    """A subscriber on its own connection. `persistent`: MQTT v5 session kept by the broker (clean_start
    False, 1 h expiry), so QoS 1 messages published while it is away are delivered when it comes back.

    The constructor returns once the broker has acknowledged the subscription (nothing published after it is
    missed); `barrier()` waits until everything the broker had for this subscriber has arrived."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        persistent: bool = False,
        v311: bool = False,
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.topic = topic
        self._messages: list[Received] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self._barriers: dict[str, threading.Event] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-rec-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311 if v311 else MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: (self.connected.clear(), self.subscribed.clear())
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(1, 1)
        if auth:
            self.client.username_pw_set(*auth)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        if v311:
            self.client.connect(host, port)
        else:
            self.client.connect(host, port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError(f"test subscriber could not connect to {host}:{port} and subscribe to {topic}")

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self._acks[client.subscribe(self.topic, qos=1)[1]] = self.subscribed
        self.connected.set()

    def _on_subscribe(self, _c: object, _u: object, mid: int, _reasons: object, _p: object) -> None:
        with self._lock:  # barrier() registers its mid under the same lock, right after SUBSCRIBE is sent
            ack = self._acks.pop(mid, None)
        if ack is not None:
            ack.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if (marker := self._barriers.get(msg.topic)) is not None:
            marker.set()
            return
        with self._lock:
            self._messages.append(Received(msg.topic, msg.payload, bool(msg.retain), time.monotonic()))

    def barrier(self, timeout: float = 10.0) -> None:
        """Return once every message the broker had queued for this subscriber has arrived, retained copies
        included. A marker published now on a private topic is queued behind them (the broker delivers a
        session's messages in order): when it arrives, so have they. A message published (and acknowledged)
        before this call that has not arrived by then was not routed here."""
        topic = f"turnout-test/barrier/{uuid.uuid4().hex}"
        acked, marker = threading.Event(), threading.Event()
        self._barriers[topic] = marker
        with self._lock:  # the SUBACK may come back before the mid is known: _on_subscribe waits for the lock
            _result, mid = self.client.subscribe(topic, qos=1)
            self._acks[mid] = acked
        if not acked.wait(timeout):
            raise AssertionError(f"barrier: no SUBACK for {topic}")
        self.client.publish(topic, b"barrier", qos=1)
        try:
            if not marker.wait(timeout):
                raise AssertionError(f"barrier: marker on {topic} not received within {timeout} s (ACL?)")
        finally:
            self.client.unsubscribe(topic)
            self._barriers.pop(topic, None)

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def seqs(self) -> list[int]:
        """seq of every occupancy message, in arrival order (duplicates included)."""
        return [json.loads(m.payload)["seq"] for m in self.on("/occupancy")]

    def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def occupancy(venue: str, camera: str, seq: int, frames: int = 0) -> Occupancy:
    return Occupancy(
        venue=venue,
        camera=camera,
        seq=seq,
        ts=utcnow(),
        sections=[SectionCount(id="north", seats=10, occupied=min(frames, 10), people=frames)],
        model="test-model",
        processing=Processing(fps=1.0, latency_ms=5.0, frames=frames),
    )


def spool_state(path: Path) -> tuple[list[int], int]:
    """(queued seqs, last seq handed out) read from a camera's spool file by another process."""
    db = sqlite3.connect(path, timeout=5)
    try:
        queued = [r[0] for r in db.execute("SELECT seq FROM queue ORDER BY id")]
        last = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        return queued, int(last)
    finally:
        db.close()


def first_occurrences(seqs: list[int]) -> list[int]:
    """Arrival order with re-deliveries (at-least-once duplicates) removed."""
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
