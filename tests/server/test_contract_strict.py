"""Issue 8 row 14 at the MQTT boundary: integers are integers, and timestamps come from a set clock."""

from __future__ import annotations

import json

import pytest

from turnout.contract import Occupancy, PayloadError, Status, decode

BASE = {
    "v": 1, "venue": "v", "camera": "c", "seq": 1, "ts": "2026-06-20T18:00:00Z",
    "sections": [{"id": "s", "seats": 100, "occupied": 50, "people": 50}],
    "model": "yolo11n", "processing": {"fps": 2, "latency_ms": 10.0, "frames": 1},
}


def _with(path: tuple, value: object) -> bytes:
    data = json.loads(json.dumps(BASE))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(data).encode()


def test_a_valid_payload_passes() -> None:
    msg = decode(Occupancy, json.dumps(BASE).encode())
    assert msg.sections[0].occupied == 50 and msg.processing.fps == 2.0  # a JSON integer is a fine float


@pytest.mark.parametrize("value", ["50", True, 49.0, 49.5, None])
@pytest.mark.parametrize("path", [("sections", 0, "occupied"), ("seq",), ("processing", "frames")])
def test_integers_must_be_json_integers(path: tuple, value: object) -> None:
    with pytest.raises(PayloadError, match=".".join(str(p) for p in path)):
        decode(Occupancy, _with(path, value))


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_timestamps_from_an_unset_clock_are_refused(ts: str) -> None:
    with pytest.raises(PayloadError, match="is the clock set"):
        decode(Occupancy, _with(("ts",), ts))
    status = {"v": 1, "venue": "v", "camera": "c", "state": "online", "ts": ts}
    with pytest.raises(PayloadError, match="is the clock set"):
        decode(Status, json.dumps(status).encode())
