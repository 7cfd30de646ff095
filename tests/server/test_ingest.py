"""Bad and repeated input: duplicated, reordered and malformed messages leave the totals exactly right."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.clock import SimulatedClock
from server.db.session import Database
from server.live import LiveHub
from server.migrations import upgrade
from tests.conftest import Broker
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import Publisher, event_spec, setup_venue, venue_spec, wait_until
from turnout.contract import MAX_PAYLOAD_BYTES, Occupancy, PayloadError, decode, occupancy_topic

START = datetime(2020, 6, 21, tzinfo=UTC)


def _payload(venue: str, camera: str, seq: int, sections: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    return {
        "v": 1,
        "venue": venue,
        "camera": camera,
        "seq": seq,
        "ts": (START - timedelta(hours=1)).isoformat(),
        "sections": [{"id": k, "seats": s, "occupied": o, "people": p} for k, (s, o, p) in sections.items()],
        "model": "yolo11n",
        "processing": {"fps": 5.0, "latency_ms": 30.0, "frames": seq},
    }


def test_bad_and_repeated_messages_through_the_broker(
    db_target: DbTarget, system_broker: Broker, venue_id: str
) -> None:
    clock = SimulatedClock(START - timedelta(hours=1))
    app = create_app(make_settings(db_target, system_broker, [venue_id]), clock=clock, run_ticks=False)
    with TestClient(app) as client:
        assert app.state.mqtt.wait_connected(10)
        setup_venue(app.state.db, venue_spec(venue_id, 2, 3, 300), event_spec(venue_id, START, 300))
        hub = app.state.hub
        hub.reload()
        pub = Publisher(system_broker)
        topic = occupancy_topic(venue_id, "cam0")
        try:
            good = _payload(venue_id, "cam0", 10, {"s00": (100, 50, 55), "s02": (100, 20, 20)})
            pub.raw(topic, json.dumps(good).encode())
            pub.raw(
                occupancy_topic(venue_id, "cam1"),
                json.dumps(_payload(venue_id, "cam1", 3, {"s01": (100, 30, 31)})).encode(),
            )
            wait_until(lambda: hub.counters["accepted"] == 2, what="good messages")
            bad: list[bytes] = [
                json.dumps({**good, "sections": [{"id": "s00", "seats": 100, "occupied": 99, "people": 99}]}).encode(),
                json.dumps(
                    {**good, "seq": 9, "sections": [{"id": "s00", "seats": 100, "occupied": 1, "people": 1}]}
                ).encode(),  # reordered: older seq
                json.dumps({**good, "seq": "eleven"}).encode(),
                json.dumps(
                    {
                        **good,
                        "seq": 11,
                        "sections": [{"id": "s00", "seats": 100, "occupied": float("nan"), "people": 1}],
                    }
                ).encode(),
                json.dumps(
                    {**good, "seq": 12, "sections": [{"id": "s00", "seats": 100, "occupied": -5, "people": 1}]}
                ).encode(),
                json.dumps(
                    {**good, "seq": 13, "sections": [{"id": "s00", "seats": 100, "occupied": 101, "people": 1}]}
                ).encode(),
                json.dumps({**good, "seq": 14, "model": "x" * (MAX_PAYLOAD_BYTES + 10)}).encode(),
                json.dumps({**good, "seq": 15, "venue": "other"}).encode(),
                b'\xff\xfe{"seq": 16}',
                b"not json at all",
                json.dumps({**good, "seq": 17, "ts": "2020-06-20T18:00:00"}).encode(),  # no UTC offset
            ]
            for raw in bad:
                pub.raw(topic, raw)
            pub.raw(occupancy_topic(venue_id, "cam9"), json.dumps(_payload(venue_id, "cam9", 1, {})).encode())
            pub.raw(f"turnout/v1/{venue_id}/cam0/occupancy/extra", b"{}")
            wait_until(lambda: hub.counters["received"] >= 2 + len(bad) + 1, what="all bad messages")
            live = client.get("/api/v1/events/ev/live").json()
            assert live["attendance"] == 50 + 30 + 20
            assert live["people"] == 55 + 31 + 20
            stats = client.get("/api/v1/ingest/stats").json()
            assert stats["accepted"] == 2
            assert stats["duplicate_or_old"] == 2
            assert stats["malformed"] == len(bad) - 2
            assert stats["unknown_camera"] == 1
            # a newer valid message is still taken
            pub.raw(topic, json.dumps(_payload(venue_id, "cam0", 30, {"s00": (100, 60, 60)})).encode())
            wait_until(lambda: hub.counters["accepted"] == 3, what="newer message")
            assert hub.snapshot("ev")["attendance"] == 60 + 30 + 20
        finally:
            pub.close()


# ------------------------------------------------------------------------------------- property test
@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> LiveHub:
    path = tmp_path_factory.mktemp("fuzz") / "t.db"
    target = DbTarget(f"sqlite:///{path}", None, "sqlite")
    db = Database(target.url)
    upgrade(db)
    setup_venue(db, venue_spec("v", 2, 3, 300), event_spec("v", START, 300))
    hub = LiveHub(make_settings(target), db, SimulatedClock(START - timedelta(hours=1)))
    hub.reload()
    return hub


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_fields = st.sampled_from(["v", "venue", "camera", "seq", "ts", "sections", "model", "processing", "extra"])
_section_fields = st.sampled_from(["id", "seats", "occupied", "people", "x"])


@st.composite
def fuzzed(draw: st.DrawFn) -> tuple[str, bytes]:
    camera = draw(st.sampled_from(["cam0", "cam1", "cam7"]))
    seq = draw(st.integers(min_value=0, max_value=60))
    sections = {}
    for sid in draw(st.lists(st.sampled_from(["s00", "s01", "s02", "zz"]), max_size=3, unique=True)):
        seats = draw(st.integers(0, 120))
        sections[sid] = (seats, draw(st.integers(0, 130)), draw(st.integers(0, 200)))
    payload = _payload("v", camera, seq, sections)
    for _ in range(draw(st.integers(0, 2))):
        payload[draw(_fields)] = draw(_values)
    secs = payload.get("sections")
    if isinstance(secs, list) and secs and isinstance(secs[0], dict) and draw(st.booleans()):
        payload["sections"][0][draw(_section_fields)] = draw(_values)
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "truncated"]))
    raw = json.dumps(payload, allow_nan=True, default=str).encode()
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
    elif kind == "truncated":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return f"turnout/v1/v/{camera}/occupancy", raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(fuzzed(), min_size=1, max_size=20))
def test_fuzzed_payloads_never_crash_or_corrupt_totals(fuzz_hub: LiveHub, messages: list[tuple[str, bytes]]) -> None:
    hub = fuzz_hub
    venue = hub.venues["v"]
    # an independent model of what the totals must be: the contract decides validity, seq must grow
    last_seq = {c: cam.last_seq for c, cam in venue.cameras.items()}
    expected = {key: r.occupied for key, r in venue.readings.items()}
    for topic, raw in messages:
        camera = topic.split("/")[3]
        try:
            msg = decode(Occupancy, raw)
        except PayloadError:
            msg = None
        hub.handle(topic, raw)
        if msg is None or msg.venue != "v" or msg.camera != camera or camera not in last_seq:
            continue
        if last_seq[camera] is not None and msg.seq <= last_seq[camera]:
            continue
        last_seq[camera] = msg.seq
        for sc in msg.sections:
            cfg = venue.sections.get(sc.id)
            if cfg is not None and camera in cfg.cameras:
                expected[(sc.id, camera)] = min(sc.occupied, cfg.seats)
    assert {k: r.occupied for k, r in venue.readings.items()} == expected
    snap = hub.snapshot("ev")
    # each section once: the first of its cameras (owner first) that has a reading (the clock stands still)
    want = 0
    for sec in venue.sections.values():
        want += next((expected[(sec.id, c)] for c in sec.cameras if (sec.id, c) in expected), 0)
    assert snap["attendance"] == want
    assert hub.counters["errors"] == 0


def test_listen_yields_a_snapshot_after_each_change(fuzz_hub: LiveHub) -> None:
    hub = fuzz_hub

    async def scenario() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        stream = hub.listen("ev", heartbeat_s=30)
        got.append(await asyncio.wait_for(anext(stream), 5))  # the current state at once
        seq = (hub.venues["v"].cameras["cam1"].last_seq or 0) + 1
        raw = json.dumps(_payload("v", "cam1", seq, {"s01": (100, 77, 80)})).encode()
        loop = asyncio.get_running_loop()
        loop.call_later(
            0.05, lambda: threading.Thread(target=hub.handle, args=("turnout/v1/v/cam1/occupancy", raw)).start()
        )
        got.append(await asyncio.wait_for(anext(stream), 5))
        await stream.aclose()
        return got

    first, second = asyncio.run(scenario())
    s01 = next(s for s in second["sections"] if s["id"] == "s01")
    assert s01["occupied"] == 77 and s01["camera"] == "cam1"
    assert second["event_id"] == first["event_id"] == "ev"
    assert hub.broadcast.listeners == 0, "the listener is removed when the stream closes"
