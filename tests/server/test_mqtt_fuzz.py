"""MQTT fuzz corpus (issue 8: "an MQTT fuzz corpus of >= 10,000 payloads leaves the totals exact").

A seeded generator writes valid occupancy and status messages (in order, replayed, older, new streams, late
messages of a retired stream) and mutations of them that the contract refuses: wrong types (strings, floats,
booleans for integers), NaN/Infinity, huge numbers, nested junk, extra keys, truncated JSON, invalid UTF-8,
oversize payloads, a payload naming another venue or camera than its topic, reserved camera ids, unknown
venues and cameras, other topics. Each message carries the outcome the test expects, computed independently
by a reference model of the server (the sequence rule of docs/mqtt.md re-implemented here, sections capped
at their configured seats, status repeats dropped).

They go through `LiveHub.handle` directly, and a subset through the real broker at 127.0.0.1:1883. The hub
must never raise; ``received`` equals the messages fed; every message lands in exactly one outcome counter,
each counter equal to the model's; the live readings and camera states equal the model's.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.live import LiveHub
from tests.conftest import Broker, retained_topics
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import Publisher, setup_venue, venue_spec, wait_until
from turnout.contract import MAX_PAYLOAD_BYTES, RESERVED_CAMERA_IDS, SEQ_LIMIT

SEED = 20260808
N_MESSAGES = 12_000
N_BROKER = 1_000
CAMERAS = ("cam0", "cam1", "cam2")
SEATS_TOTAL, N_SECTIONS = 600, 6
OUTCOMES = (
    "accepted",
    "status",
    "duplicate_or_old",
    "malformed",
    "bad_topic",
    "unknown_venue",
    "unknown_camera",
    "ignored",
    "errors",
)
"""Every message the hub receives ends in exactly one of these (``unknown_section`` and ``new_stream`` are
details of accepted messages, not outcomes)."""


# ------------------------------------------------------------------------------------------ reference model
@dataclass
class CamModel:
    stream: str | None = None
    seq: int | None = None
    retired: str | None = None  # "" for the stream None
    status: tuple[str, str] | None = None  # (ts, state) of the last status applied
    state: str = "unknown"


@dataclass
class Model:
    """What the server should hold after each message, written from docs/mqtt.md (not from server code)."""

    venue: str
    sections: dict[str, tuple[int, list[str]]]  # id -> (seats, cameras)
    cams: dict[str, CamModel] = field(default_factory=lambda: {c: CamModel() for c in CAMERAS})
    readings: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    unknown_section: int = 0
    new_stream: int = 0

    def occupancy(self, camera: str, msg: dict[str, Any]) -> str:
        cam = self.cams[camera]
        stream, seq = msg.get("stream"), msg["seq"]
        key = "" if stream is None else stream
        if cam.seq is None:
            pass  # first message ever
        elif stream == cam.stream:
            if seq <= cam.seq:
                return "duplicate_or_old"
        elif cam.retired is not None and key == cam.retired:
            return "duplicate_or_old"  # late message of the stream the camera left
        else:
            cam.retired = "" if cam.stream is None else cam.stream
            self.new_stream += 1
        cam.stream, cam.seq = stream, seq
        if cam.state in ("unknown", "offline"):
            cam.state = "online"
        for sc in msg["sections"]:
            cfg = self.sections.get(sc["id"])
            if cfg is None or camera not in cfg[1]:
                self.unknown_section += 1
                continue
            self.readings[(sc["id"], camera)] = (min(sc["occupied"], cfg[0]), sc["people"], sc["seats"])
        return "accepted"

    def status(self, camera: str, msg: dict[str, Any]) -> str:
        cam = self.cams[camera]
        mark = (msg["ts"], msg["state"])
        if cam.status == mark:
            return "duplicate_or_old"
        cam.status, cam.state = mark, msg["state"]
        return "status"


# ------------------------------------------------------------------------------------------------ generator
@dataclass
class Fed:
    topic: str
    payload: bytes
    outcome: str


class Corpus:
    """Seeded messages for one venue, each with the outcome the model gives it when fed in order."""

    def __init__(self, venue: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.venue = venue
        spec = venue_spec(venue, len(CAMERAS), N_SECTIONS, SEATS_TOTAL)
        self.spec = spec
        self.model = Model(venue, {s.id: (s.seats, list(s.cameras)) for s in spec.sections})
        self.t0 = datetime(2026, 6, 20, 18, 0, tzinfo=UTC)
        self.streams: dict[str, list[str | None]] = {c: [None] for c in CAMERAS}  # streams each camera used
        self.next_seq: dict[str, int] = dict.fromkeys(CAMERAS, 1)
        self.sent: dict[str, list[dict[str, Any]]] = {c: [] for c in CAMERAS}  # valid occupancy sent so far
        self.clock_s = 0

    # -- valid messages
    def _ts(self) -> str:
        self.clock_s += 1
        return (self.t0 + timedelta(seconds=self.clock_s)).isoformat().replace("+00:00", "Z")

    def occupancy(self, camera: str) -> dict[str, Any]:
        rng = self.rng
        sections = []
        for sid, (seats, cams) in self.model.sections.items():
            if camera in cams and rng.random() < 0.9:
                msg_seats = seats if rng.random() < 0.9 else seats + rng.randint(1, 50)  # edge config differs
                occupied = rng.randint(0, msg_seats)
                sections.append({"id": sid, "seats": msg_seats, "occupied": occupied, "people": occupied})
        if rng.random() < 0.05:  # a section this camera does not cover (or no such section)
            sid = rng.choice([*self.model.sections, "s99"])
            if sid not in {s["id"] for s in sections}:
                sections.append({"id": sid, "seats": 10, "occupied": 3, "people": 4})
        stream = self.streams[camera][-1]
        msg: dict[str, Any] = {
            "v": 1,
            "venue": self.venue,
            "camera": camera,
            "seq": self.next_seq[camera],
            "ts": self._ts(),
            "sections": sections,
            "model": "yolo11n",
            "processing": {"fps": round(rng.uniform(0.5, 9), 2), "latency_ms": rng.randint(5, 900), "frames": 7},
        }
        if stream is not None:
            msg["stream"] = stream
        self.next_seq[camera] += rng.choice((1, 1, 1, 2, 5))
        return msg

    def status(self, camera: str) -> dict[str, Any]:
        msg = {
            "v": 1,
            "venue": self.venue,
            "camera": camera,
            "state": self.rng.choice(("online", "online", "degraded", "offline")),
            "ts": self._ts(),
        }
        if self.rng.random() < 0.2:
            msg["calibration"] = {"bias": 0.9, "spread": 0.1, "frames": 20}
        return msg

    @staticmethod
    def dump(msg: Any) -> bytes:
        return json.dumps(msg, separators=(",", ":")).encode()

    def topic(self, camera: str, kind: str, venue: str | None = None) -> str:
        return f"turnout/v1/{venue or self.venue}/{camera}/{kind}"

    # -- one message of each family
    def valid_occupancy(self) -> Fed:
        cam = self.rng.choice(CAMERAS)
        if self.rng.random() < 0.01:  # device reset: a new stream, seq from the start
            self.streams[cam].append(uuid.UUID(int=self.rng.getrandbits(128)).hex[:16])
            self.next_seq[cam] = self.rng.randint(0, 3)
        msg = self.occupancy(cam)
        self.sent[cam].append(msg)
        return Fed(self.topic(cam, "occupancy"), self.dump(msg), self.model.occupancy(cam, msg))

    def replay(self) -> Fed:
        """An earlier valid message again (at-least-once duplicate, re-delivery, a retired stream's straggler)."""
        cams = [c for c in CAMERAS if self.sent[c]]
        if not cams:
            return self.valid_occupancy()
        cam = self.rng.choice(cams)
        # From the current stream or the one just retired: by the documented rule (one retired stream
        # remembered) a straggler of an older stream counts as a new stream and takes the camera over, refusing
        # the live stream's messages until the next reset; that is the rule, not what this corpus is about.
        recent = self.streams[cam][-2:]
        pool = [m for m in self.sent[cam] if m.get("stream") in recent]
        msg = self.rng.choice(pool[-50:]) if self.rng.random() < 0.8 else self.rng.choice(pool)
        return Fed(self.topic(cam, "occupancy"), self.dump(msg), self.model.occupancy(cam, msg))

    def valid_status(self) -> Fed:
        cam = self.rng.choice(CAMERAS)
        msg = self.status(cam)
        return Fed(self.topic(cam, "status"), self.dump(msg), self.model.status(cam, msg))

    def status_repeat(self) -> Fed:
        cam = self.rng.choice(CAMERAS)
        st = self.model.cams[cam].status
        if st is None:
            return self.valid_status()
        msg = {"v": 1, "venue": self.venue, "camera": cam, "ts": st[0], "state": st[1]}
        return Fed(self.topic(cam, "status"), self.dump(msg), self.model.status(cam, msg))

    def malformed(self) -> Fed:
        """A mutation of a valid message that the contract refuses; the model's state does not move."""
        rng = self.rng
        cam = rng.choice(CAMERAS)
        is_status = rng.random() < 0.2
        base = self.status(cam) if is_status else self.occupancy(cam)
        kind = "status" if is_status else "occupancy"
        msg = copy.deepcopy(base)
        mutation = rng.randrange(24)
        sec = msg["sections"][0] if not is_status and msg["sections"] else None
        raw: bytes | None = None
        if is_status:
            mutation = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12))
            raw = self._status_mutation(msg, mutation)
        elif mutation == 0 and sec:
            sec["occupied"] = float(sec["occupied"])  # 49.0: the schema says integer
        elif mutation == 1 and sec:
            sec["occupied"] = str(sec["occupied"])
        elif mutation == 2 and sec:
            sec["occupied"] = rng.choice((True, False))
        elif mutation == 3:
            msg["seq"] = rng.choice((float(msg["seq"]), str(msg["seq"]), True, None, -1, SEQ_LIMIT, 10**30, 2**63 - 1))
        elif mutation == 4:
            raw = self.dump(msg).replace(b'"frames":7', b'"frames":' + rng.choice((b"NaN", b"Infinity", b"-Infinity")))
        elif mutation == 5:  # inf after parsing, negative, or not a JSON number
            msg["processing"]["fps"] = rng.choice((1e400, -1.0, "1.5", True))
            raw = self.dump(msg).replace(b"Infinity", b"1e400")
        elif mutation == 6 and sec:
            sec["occupied"] = sec["seats"] + rng.randint(1, 10**6)  # more than its seats / than 10^6
        elif mutation == 7:
            msg[rng.choice(("sections", "processing", "model", "ts"))] = {"a": [{"b": [1, {"c": None}]}] * 3}
        elif mutation == 8:
            msg["extra"] = 1
        elif mutation == 9:
            full = self.dump(msg)
            raw = full[: rng.randrange(len(full))]  # every proper prefix of a JSON object is invalid
        elif mutation == 10:
            full = self.dump(msg)
            cut = rng.randrange(1, len(full) - 1)
            raw = full[:cut] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80")) + full[cut:]
        elif mutation == 11:
            msg["model"] = "m" * (MAX_PAYLOAD_BYTES + rng.randint(0, 1000))  # oversize: refused unread
        elif mutation == 12:
            msg["venue"] = f"{self.venue}x"  # payload's venue differs from the topic's
        elif mutation == 13:
            msg["camera"] = rng.choice([c for c in CAMERAS if c != cam])  # payload's camera differs
        elif mutation == 14:
            msg["ts"] = rng.choice(("2026-06-20T18:00:00", "yesterday", "0001-01-01T00:00:00Z", 1718900000))
        elif mutation == 15:
            msg["v"] = rng.choice((2, 0, "1", None))
        elif mutation == 16 and sec:
            msg["sections"].append(dict(sec))  # the same section twice
        elif mutation == 17:
            raw = rng.choice((b"[]", b'"occupancy"', b"1", b"null", b"true", b"", b" ", b"{}"))
        elif mutation == 18:
            del msg[rng.choice(("venue", "camera", "seq", "ts", "sections", "model", "processing"))]
        elif mutation == 19:
            msg["stream"] = rng.choice(("", "a b", "x" * 65, 7, None))
            if msg["stream"] is None:
                msg["processing"]["frames"] = -1
        elif mutation == 20:
            msg["sections"] = (
                [{"id": "s00", "seats": 1, "occupied": 0, "people": 0}] * 1001 if rng.random() < 0.1 else 5
            )
        elif mutation == 21:
            msg["processing"]["tiles"] = rng.choice((0, 5000, 1.0))
        elif mutation == 22 and sec:
            sec["people"] = rng.choice((-1, 10**6 + 1, 2**64))
        else:
            msg["model"] = "m" * 129
        if raw is None:
            raw = self.dump(msg)
        return Fed(self.topic(cam, kind), raw, "malformed")

    def _status_mutation(self, msg: dict[str, Any], mutation: int) -> bytes:
        rng = self.rng
        if mutation == 0:
            msg["state"] = rng.choice(("sleeping", "ONLINE", 1, None))
        elif mutation == 1:
            msg["calibration"] = {"bias": rng.choice((0.0, 9.0, "1", True)), "spread": 0.1, "frames": 5}
        elif mutation == 2:
            msg["calibration"] = {"bias": 1.0, "spread": 0.1, "frames": rng.choice((1.0, "5", True, 0))}
        elif mutation == 3:
            msg["reason"] = "r" * 501
        elif mutation == 4:
            msg["venue"] = f"{self.venue}x"
        elif mutation == 5:
            msg["ts"] = "2026-06-20 18:00"
        elif mutation == 6:
            msg["extra"] = [1, 2]
        elif mutation == 7:
            full = self.dump(msg)
            return full[: rng.randrange(len(full))]
        elif mutation == 8:
            return self.dump(msg)[:-1] + b"\xff}"
        elif mutation == 9:
            msg["reason"] = "x" * (MAX_PAYLOAD_BYTES + 10)
        elif mutation == 10:
            return self.dump(msg).replace(b'"v":1', b'"v":NaN')
        elif mutation == 11:
            msg["camera"] = rng.choice([c for c in CAMERAS if c != msg["camera"]])
        else:
            del msg["state"]
        return self.dump(msg)

    def elsewhere(self) -> Fed:
        """Valid payloads on topics the venue's state must not take: unknown venue/camera, reserved ids,
        not a camera topic, other kinds of camera topic."""
        rng = self.rng
        cam = rng.choice(CAMERAS)
        choice = rng.randrange(6)
        if choice == 0:  # a venue the server does not know (occupancy)
            other = f"{self.venue}zz"
            msg = self.occupancy(cam) | {"venue": other}
            return Fed(self.topic(cam, "occupancy", other), self.dump(msg), "unknown_venue")
        if choice == 1:  # a camera the venue does not have (occupancy or status)
            unknown = f"cam{rng.randint(3, 99)}"
            msg = (self.occupancy(cam) if rng.random() < 0.5 else self.status(cam)) | {"camera": unknown}
            kind = "occupancy" if "seq" in msg else "status"
            return Fed(self.topic(unknown, kind), self.dump(msg), "unknown_camera")
        if choice == 2:  # status of an unknown venue: counted as an unknown camera
            other = f"{self.venue}zz"
            msg = self.status(cam) | {"venue": other}
            return Fed(self.topic(cam, "status", other), self.dump(msg), "unknown_camera")
        if choice == 3:  # reserved camera ids: not a camera topic at all
            reserved = rng.choice(sorted(RESERVED_CAMERA_IDS))
            msg = self.occupancy(cam) | {"camera": reserved}
            return Fed(self.topic(reserved, rng.choice(("occupancy", "status"))), self.dump(msg), "bad_topic")
        if choice == 4:  # other camera topics the hub does not ingest
            kind = rng.choice(("snapshot", "layout", "layout/result", "cmd/snapshot"))
            return Fed(self.topic(cam, kind), self.dump(self.occupancy(cam)), "ignored")
        topic = rng.choice(
            (
                f"turnout/v1/{self.venue}/{cam}",
                f"turnout/v2/{self.venue}/{cam}/occupancy",
                f"turnout/v1/{self.venue}/{cam}/occupancy/extra",
                f"turnout/v1/{self.venue}/c a m/occupancy",
                f"turnout/v1/{self.venue}/{'c' * 65}/occupancy",
                "",
                "#",
                f"turnout/v1/{self.venue}/alerts/overflow_decision",
            )
        )
        return Fed(topic, self.dump(self.occupancy(cam)), "bad_topic")

    def messages(self, n: int) -> Iterator[Fed]:
        families = (
            (self.valid_occupancy, 40),
            (self.replay, 12),
            (self.valid_status, 6),
            (self.status_repeat, 2),
            (self.malformed, 30),
            (self.elsewhere, 10),
        )
        funcs, weights = zip(*families, strict=True)
        for _ in range(n):
            yield self.rng.choices(funcs, weights)[0]()


# -------------------------------------------------------------------------------------------------- checks
def _check(hub: LiveHub, venue: str, fed: list[Fed], model: Model, start: Counter[str]) -> None:
    counters = Counter(hub.counters)
    counters.subtract(start)
    expected = Counter(f.outcome for f in fed)
    assert counters["received"] == len(fed)
    assert counters["errors"] == 0
    got = {k: counters[k] for k in OUTCOMES}
    assert got == {k: expected[k] for k in OUTCOMES}
    assert sum(got.values()) == counters["received"], "every message in exactly one outcome"
    assert counters["unknown_section"] == model.unknown_section
    assert counters["new_stream"] == model.new_stream
    live = hub.venues[venue]
    with hub.state.lock:
        readings = {k: (r.occupied, r.people, r.seats) for k, r in live.readings.items()}
        cams = {c.id: (c.state, c.last_stream, c.last_seq) for c in live.cameras.values()}
    assert readings == model.readings
    assert cams == {c: (m.state, m.stream, m.seq) for c, m in model.cams.items()}


def _app(tmp_path: Any, venue: str, **kw: Any) -> Any:
    db = DbTarget(f"sqlite:///{tmp_path / 'turnout.db'}", None, "sqlite")
    return create_app(make_settings(db, **kw), run_ticks=False)


def test_fuzz_corpus_through_the_hub_leaves_totals_exact(tmp_path: Any, venue_id: str) -> None:
    corpus = Corpus(venue_id, SEED)
    fed = list(corpus.messages(N_MESSAGES))
    outcomes = Counter(f.outcome for f in fed)
    # the corpus really has each family in numbers
    assert len(fed) >= 10_000 and outcomes["malformed"] >= 3000 and outcomes["accepted"] >= 3000
    assert outcomes["duplicate_or_old"] >= 500 and all(outcomes[k] >= 50 for k in OUTCOMES if k != "errors")
    assert corpus.model.new_stream >= 5
    app = _app(tmp_path, venue_id)
    with TestClient(app):
        hub: LiveHub = app.state.hub
        setup_venue(app.state.db, corpus.spec, None)
        hub.reload()
        start = Counter(hub.counters)
        t = time.monotonic()
        for f in fed:
            hub.handle(f.topic, f.payload)  # never raises
        elapsed = time.monotonic() - t
        _check(hub, venue_id, fed, corpus.model, start)
    print(f"{len(fed)} messages in {elapsed:.2f} s: {dict(outcomes)}")


def test_fuzz_model_catches_a_wrong_hub(tmp_path: Any, venue_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: a hub that accepts floats for integers (pydantic's lax mode) is caught."""
    corpus = Corpus(venue_id, SEED + 1)
    fed = list(corpus.messages(2000))
    app = _app(tmp_path, venue_id)
    with TestClient(app):
        hub: LiveHub = app.state.hub
        setup_venue(app.state.db, corpus.spec, None)
        hub.reload()
        start = Counter(hub.counters)
        for f in fed:  # a wrong hub: replays are applied again (no sequence rule)
            if f.outcome == "duplicate_or_old" and b'"seq"' in f.payload:
                msg = json.loads(f.payload)
                msg["seq"] = 2**52 + len(f.payload)
                hub.handle(f.topic, json.dumps(msg).encode())
            else:
                hub.handle(f.topic, f.payload)
        with pytest.raises(AssertionError):
            _check(hub, venue_id, fed, corpus.model, start)


# -------------------------------------------------------------------------------------- through the broker
def _clear_retained(broker: Broker, topics: set[str]) -> None:
    pub = Publisher(broker)
    try:
        for topic in sorted(topics):
            pub.raw(topic, b"", retain=True)
    finally:
        pub.close()


def test_fuzz_subset_through_the_real_broker(tmp_path: Any, system_broker: Broker, venue_id: str) -> None:
    corpus = Corpus(venue_id, SEED + 2)
    # MQTT carries only topics a client may publish to and the server subscribes to: occupancy and status
    # of any venue (others never reach the hub); "" and "#" cannot be published.
    # (lazily: the model stops at the last message kept; the ones left out never move it)
    fed = list(
        itertools.islice(
            (
                f
                for f in corpus.messages(N_BROKER * 3)
                if f.topic.startswith(f"turnout/v1/{venue_id}/") and f.topic.endswith(("/occupancy", "/status"))
            ),
            N_BROKER,
        )
    )
    assert len(fed) == N_BROKER
    app = _app(tmp_path, venue_id, mqtt_enabled=True, mqtt_url=system_broker.url, mqtt_venues=[venue_id])
    retained = {f.topic for f in fed if f.topic.endswith("/status")}
    try:
        _ingest_through_broker(app, system_broker, corpus, fed)
    finally:
        _clear_retained(system_broker, retained)


def _ingest_through_broker(app: Any, system_broker: Broker, corpus: Corpus, fed: list[Fed]) -> None:
    venue_id = corpus.venue
    with TestClient(app):
        hub: LiveHub = app.state.hub
        assert app.state.mqtt.wait_connected(10)
        setup_venue(app.state.db, corpus.spec, None)
        hub.reload()
        start = Counter(hub.counters)
        pub = Publisher(system_broker)
        try:
            for f in fed:  # statuses retained as an edge sends them, occupancy never
                pub.raw(f.topic, f.payload, retain=f.topic.endswith("/status"))
        finally:
            pub.close()
        wait_until(lambda: hub.counters["received"] - start["received"] >= len(fed), 20, "all messages ingested")
        _check(hub, venue_id, fed, corpus.model, start)


def test_no_retained_messages_left_by_this_module(system_broker: Broker, venue_id: str) -> None:
    """Runs last here: a fresh subscriber to ``turnout/v1/#`` gets no retained message of a venue this module
    used (each test's venue id starts with its own prefix)."""
    assert _USED, "the broker test above ran first"
    retained = retained_topics(system_broker.host, system_broker.port, "turnout/v1/#")
    assert sorted(t for t in retained if t.startswith(tuple(_USED))) == []


_USED: set[str] = set()


@pytest.fixture(autouse=True)
def _remember_venue(venue_id: str) -> None:
    _USED.add(f"turnout/v1/{venue_id}/")
