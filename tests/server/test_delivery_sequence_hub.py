"""Issue 8 rows 1 and 2 through the live hub: no sequence number can lock a camera out, and none stops the
saving of live state; the stream rule survives a restart (state reloaded from the database)."""

from __future__ import annotations

import json
from datetime import timedelta

from server.clock import SimulatedClock
from server.db.session import Database
from server.live import LiveHub
from server.migrations import upgrade
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import event_spec, setup_venue, venue_spec

TOPIC = "turnout/v1/{v}/cam0/occupancy"


def _msg(venue: str, seq: int, occupied: int, stream: str | None, clock: SimulatedClock) -> bytes:
    body = {
        "v": 1, "venue": venue, "camera": "cam0", "seq": seq, "ts": clock.now().isoformat(),
        "sections": [{"id": "s00", "seats": 100, "occupied": occupied, "people": occupied}],
        "model": "yolo11n", "processing": {"fps": 1.0, "latency_ms": 10.0, "frames": 1},
    }
    if stream is not None:
        body["stream"] = stream
    return json.dumps(body).encode()


def _occupied(hub: LiveHub, venue: str) -> int:
    return hub.venues[venue].readings[("s00", "cam0")].occupied


def test_huge_seq_neither_locks_the_camera_nor_stops_saving(sqlite_target: DbTarget, venue_id: str,
                                                            clock: SimulatedClock) -> None:
    db = Database(sqlite_target.url)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 1, 1, 100), event_spec(venue_id, clock.now() + timedelta(hours=2), 100))
    settings = make_settings(sqlite_target, None, [venue_id])
    hub = LiveHub(settings, db, clock)
    hub.reload()
    topic = TOPIC.format(v=venue_id)
    hub.handle(topic, _msg(venue_id, 10, 5, "a1", clock))
    for bad in (2**63 - 1, 10**30):  # rejected at the contract boundary: counted, the camera goes on
        hub.handle(topic, _msg(venue_id, bad, 99, "a1", clock))
    assert hub.counters["malformed"] == 2 and _occupied(hub, venue_id) == 5
    hub.handle(topic, _msg(venue_id, 2**53 - 1, 7, "a1", clock))  # the largest legal seq (a clock far ahead)
    hub.handle(topic, _msg(venue_id, 11, 8, "a1", clock))  # same stream, older: refused
    assert _occupied(hub, venue_id) == 7
    hub.tick(flush=True)  # saving live state works with the largest seq
    # the device is reset (new state file, clock right again): a new stream, accepted at once
    restarted = LiveHub(settings, db, clock)
    restarted.reload()
    assert restarted.venues[venue_id].cameras["cam0"].last_seq == 2**53 - 1
    restarted.handle(topic, _msg(venue_id, 3, 9, "b2", clock))
    assert _occupied(restarted, venue_id) == 9 and restarted.counters["new_stream"] == 1
    restarted.handle(topic, _msg(venue_id, 2**53 - 2, 1, "a1", clock))  # late message of the retired stream
    restarted.handle(topic, _msg(venue_id, 2, 1, "b2", clock))  # an old seq of the current stream
    restarted.handle(topic, _msg(venue_id, 4, 10, "b2", clock))
    assert _occupied(restarted, venue_id) == 10 and restarted.counters["duplicate_or_old"] == 2
    db.dispose()
