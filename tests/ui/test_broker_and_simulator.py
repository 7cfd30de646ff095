"""The demo's embedded broker and venue simulator, on real MQTT."""

from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker
from turnout import contract
from turnout.embedded_broker import EmbeddedBroker
from turnout.simulator import TULSA_CURVE, SimClock, VenueSimulator, arena_plan, curve_share


def _subscriber(host: str, port: int, topic: str) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], threading.Event]:
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_message = lambda c, u, m: got.append(m)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.connect(host, port)
    client.loop_start()
    assert subscribed.wait(5), "subscription not acknowledged"
    return client, got, subscribed


def test_embedded_broker_delivers_retained_and_live_messages() -> None:
    broker = EmbeddedBroker().start()
    try:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        pub.publish("turnout/v1/x/cam/status", b"retained-status", qos=1, retain=True).wait_for_publish(5)
        sub, got, _ = _subscriber(broker.host, broker.port, "turnout/v1/#")
        pub.publish("turnout/v1/x/cam/occupancy", b"live", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(m.topic, m.payload, bool(m.retain)) for m in got] == [
            ("turnout/v1/x/cam/status", b"retained-status", True),
            ("turnout/v1/x/cam/occupancy", b"live", False),
        ]
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    finally:
        broker.stop()


def test_arrival_curve_and_plan() -> None:
    shares = [curve_share(TULSA_CURVE, m) for m in range(-300, 30, 5)]
    assert shares == sorted(shares) and shares[0] == 0.0 and shares[-1] == 1.0
    plan = arena_plan(18_880, 6_200)
    assert plan.seats == 18_880 and len(plan.sections) == 24
    assert all(s.id.startswith("sim-") for s in plan.sections) and all(c.id.startswith("sim-") for c in plan.cameras)
    final = plan.occupancy(0.0)
    assert abs(sum(final.values()) - 6_200) <= len(final)  # rounding per section
    assert all(final[s.id] <= s.seats for s in plan.sections)
    with pytest.raises(ValueError, match="speed"):
        SimClock(datetime.now(UTC), speed=0)


def test_simulated_sections_of_a_tier_vary_like_real_ones() -> None:
    plan = arena_plan(18_880, 6_200)
    rng = random.Random(1)
    for minutes in (-150.0, -60.0, 0.0):
        counts = plan.occupancy(minutes, rng)
        assert abs(sum(counts.values()) - 6_200 * curve_share(TULSA_CURVE, minutes)) <= 0.03 * 6_200
        for tier in "123":
            fills = [counts[s.id] / s.seats for s in plan.sections if s.id.startswith(f"sim-s{tier}")]
            same = len(fills) - len({counts[s.id] for s in plan.sections if s.id.startswith(f"sim-s{tier}")})
            assert same <= 1, (minutes, tier, fills)  # at most one pair alike (small counts early on)
            spread = statistics.pstdev(fills) / statistics.mean(fills)
            assert 0.05 < spread < 0.5, (minutes, tier, fills)  # varied, yet one tier
    # the lower bowl still draws more of the crowd than the upper tier
    final = plan.occupancy(0.0)
    lower = sum(final[s.id] for s in plan.sections if s.id.startswith("sim-s1"))
    upper = sum(final[s.id] for s in plan.sections if s.id.startswith("sim-s3"))
    assert lower > 1.5 * upper
    # and each reading moves a little, as a camera count does
    assert plan.occupancy(-60.0, random.Random(2)) != plan.occupancy(-60.0, random.Random(3))


def test_simulator_publishes_valid_occupancy_along_the_curve(own_broker: Broker, venue_id: str) -> None:
    plan = arena_plan(2_400, 1_000, cameras=2, per_camera=2)
    start = datetime.now(UTC) + timedelta(minutes=60)
    clock = SimClock(datetime.now(UTC), speed=600)  # 10 event minutes per wall second
    sub, got, _ = _subscriber(own_broker.host, own_broker.port, f"turnout/v1/{venue_id}/+/occupancy")
    sim = VenueSimulator(
        plan, venue=venue_id, start_time=start, clock=clock, host=own_broker.host, port=own_broker.port, interval_s=0.2
    ).start()
    def per_camera() -> int:  # messages of the camera that has sent the fewest
        topics = [m.topic for m in list(got)]
        return min(sum(1 for t in topics if f"/{cam}/" in t) for cam in ("sim-cam01", "sim-cam02"))

    deadline = time.monotonic() + 30
    while per_camera() < 10:  # about 2 s of wall time (20 event minutes) at one message per camera per 0.2 s
        assert time.monotonic() < deadline, f"only {per_camera()} messages per camera after 30 s"
        time.sleep(0.05)
    sim.stop()
    sub.loop_stop()
    sub.disconnect()
    msgs = [contract.decode(contract.Occupancy, m.payload) for m in got]
    assert {m.camera for m in msgs} == {"sim-cam01", "sim-cam02"}
    for cam in ("sim-cam01", "sim-cam02"):
        seqs = [m.seq for m in msgs if m.camera == cam]
        assert seqs == sorted(set(seqs)) and len(seqs) >= 8
    totals = [
        sum(s.occupied for m in msgs if m.seq == seq for s in m.sections) for seq in sorted({m.seq for m in msgs})
    ]
    assert totals[-1] > totals[0], totals  # the arena fills as event time passes
    minutes_left = (start - msgs[-1].ts).total_seconds() / 60
    expected = 1_000 * curve_share(TULSA_CURVE, -minutes_left)
    assert totals[-1] == pytest.approx(expected, rel=0.1, abs=10)
