"""Safeguards: no decision without live data, last-will handling, overrides, reconnects, outside changes,
and bad requests answered with 4xx instead of 500."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from server.app import create_app
from server.auth import Role
from server.clock import SimulatedClock
from server.decision import DecisionState
from tests.conftest import Broker
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import (
    Publisher,
    Subscriber,
    auth,
    event_spec,
    make_user,
    setup_venue,
    venue_spec,
    wait_until,
)
from turnout import contract
from turnout.contract import PayloadError, Status, decode

STALE_S = 30.0


def _app(db: DbTarget, broker: Broker | None, venue: str, clock: SimulatedClock, **kw: Any) -> Any:
    settings = make_settings(db, broker, [venue], stale_after_s=STALE_S, decision_hold_s=0, **kw)
    return create_app(settings, clock=clock, run_ticks=False)


def _publish_all(pub: Publisher, hub: Any, venue: str, per_section: int, now: Any) -> None:
    """Every camera reports ``per_section`` people in each section it owns; waits until all are ingested."""
    v = hub.venues[venue]
    expected = hub.counters["accepted"] + len(v.cameras)
    for cam in sorted(v.cameras):
        counts = {
            s.id: (s.seats, min(per_section, s.seats), min(per_section, s.seats))
            for s in v.sections.values()
            if s.cameras[0] == cam
        }
        pub.occupancy(venue, cam, now, counts)
    wait_until(lambda: hub.counters["accepted"] >= expected, what="occupancy ingested")


# ------------------------------------------------------------------------------------ item 1
def test_no_decision_on_frozen_counts_from_stale_cameras(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    start = clock.now() + timedelta(hours=3)
    # what is tested is the coverage guard, not the forecast: let two readings be enough to decide
    app = _app(sqlite_target, system_broker, venue_id, clock, min_fitted_points=2, cancel_max_risk=0.45)
    pub = Publisher(system_broker)
    try:
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            setup_venue(app.state.db, venue_spec(venue_id, 4, 8, 19_000), event_spec(venue_id, start, 19_000))
            hub = app.state.hub
            hub.reload()
            clock.set(start - timedelta(minutes=150))  # early: too little of the crowd is usually in
            _publish_all(pub, hub, venue_id, 825, clock.now())  # 8 x 825 = 6,600 counted
            hub.tick()
            assert hub.snapshot("ev")["attendance"] == 6600
            # every camera falls silent; the frozen 6,600 over a growing expected share looks like a small crowd
            for minutes in (120, 90, 60):
                clock.set(start - timedelta(minutes=minutes))
                hub.tick()
            live = client.get("/api/v1/events/ev/live").json()
            assert live["decision"]["state"] == "undecided", live["decision"]
            assert live["decision"]["figures"]["coverage"] == 0.0
            assert "cover" in live["decision"]["figures"]["reason"]
            # the same figures from live cameras do decide (the guard is what held it back)
            _publish_all(pub, hub, venue_id, 825, clock.now())
            hub.tick()
            live = client.get("/api/v1/events/ev/live").json()
            assert live["decision"]["state"] == "cancel_overflow", live["decision"]
            assert live["decision"]["figures"]["coverage"] == 1.0 and live["decision"]["figures"]["reason"] is None
    finally:
        pub.close()


def test_no_decision_on_registrations_alone(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock, tmp_path: Path
) -> None:
    from server.registrations import import_file

    start = clock.now() + timedelta(hours=3)
    app = _app(sqlite_target, system_broker, venue_id, clock)
    reg = tmp_path / "reg.csv"
    reg.write_text("email\n" + "".join(f"fan{i}@example.org\n" for i in range(2000)))
    pub = Publisher(system_broker)
    try:
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            setup_venue(app.state.db, venue_spec(venue_id, 2, 4, 100), event_spec(venue_id, start, 100))
            with app.state.db.session() as s:
                assert import_file(s, "ev", reg).ok
            hub = app.state.hub
            hub.reload()
            for minutes in (90, 60):  # cameras live, nobody in yet: 2,000 registrations x 60% >> 100 seats
                clock.set(start - timedelta(minutes=minutes))
                _publish_all(pub, hub, venue_id, 0, clock.now())
                hub.tick()
            live = client.get("/api/v1/events/ev/live").json()
            # the registrations alone say the 100 seats could well fill (attendance is capped at capacity) ...
            fc = live["forecast"]
            assert fc["method"] == "registrations" and fc["p95"] == 100 and fc["p_reach_target"] > 0.3
            # ... and still nothing is decided on them
            assert live["decision"]["state"] == "undecided", live["decision"]
            assert "registrations only" in live["decision"]["figures"]["reason"]
            assert live["decision"]["figures"]["coverage"] == 1.0
    finally:
        pub.close()


# ------------------------------------------------------------------------------------ item 2
def test_last_will_with_an_older_ts_takes_the_camera_offline(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    with pytest.raises(PayloadError, match="UTC"):
        decode(
            Status, json.dumps({"venue": "v", "camera": "c", "state": "online", "ts": "2020-06-20T18:00:00"}).encode()
        )
    app = _app(sqlite_target, system_broker, venue_id, clock)
    pub = Publisher(system_broker)
    try:
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            start = clock.now() + timedelta(hours=1)
            setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, start, 200))
            hub = app.state.hub
            hub.reload()
            will_ts = clock.now()  # the will's ts is fixed at CONNECT, before `online` is sent
            clock.advance(STALE_S + 1)
            pub.status(venue_id, "cam0", "online", clock.now())
            wait_until(lambda: hub.counters["status"] >= 1, what="online status")
            hub.tick()
            assert {c["id"]: c["state"] for c in client.get("/api/v1/events/ev/live").json()["cameras"]}[
                "cam0"
            ] == "online"
            pub.status(venue_id, "cam0", "offline", will_ts)  # the broker sends the will
            wait_until(lambda: hub.counters["status"] >= 2, what="offline status")
            hub.tick()
            live = client.get("/api/v1/events/ev/live").json()
            assert {c["id"]: c["state"] for c in live["cameras"]}["cam0"] == "offline"
            active = client.get("/api/v1/alerts", params={"active": True}).json()
            assert [a["id"] for a in active] == [f"{venue_id}:camera_offline:cam0"]
            pub.status(venue_id, "cam0", "offline", will_ts)  # an exact repeat is dropped
            wait_until(lambda: hub.counters["duplicate_or_old"] >= 1, what="repeat dropped")
    finally:
        pub.raw(contract.status_topic(venue_id, "cam0"), b"", retain=True)
        pub.close()


# ------------------------------------------------------------------------------------ items 3, 4
def test_override_waits_for_a_running_tick_and_undecided_withdraws_the_alert(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    app = _app(sqlite_target, system_broker, venue_id, clock)
    alerts = Subscriber(system_broker, f"turnout/v1/{venue_id}/alerts/overflow_decision")
    try:
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            start = clock.now() + timedelta(hours=1)
            setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, start, 200))
            hub = app.state.hub
            hub.reload()
            operator = make_user(app.state.db, Role.operator)
            url = "/api/v1/events/ev/decision/override"
            # an evaluation tick is running: the override must wait for it, not race it
            hub._tick_lock.acquire()
            done = threading.Event()

            def override() -> None:
                client.post(url, json={"state": "cancel_overflow"}, headers=auth(operator))
                done.set()

            worker = threading.Thread(target=override)
            worker.start()
            try:
                assert not done.wait(0.5), "the override ran while a tick held the evaluation"
            finally:
                hub._tick_lock.release()
            worker.join(10)
            assert done.is_set()
            hub.tick()
            assert hub.snapshot("ev")["decision"]["state"] == "cancel_overflow"
            wait_until(lambda: alerts.payloads(), what="decision alert")
            r = client.post(url, json={"state": "undecided"}, headers=auth(operator))
            assert r.status_code == 200 and r.json()["state"] == "undecided"
            row = next(a for a in client.get("/api/v1/alerts").json() if a["id"] == "ev:overflow_decision")
            assert row["state"] == "undecided" and not row["active"]
            assert client.get("/api/v1/alerts", params={"active": True}).json() == []
            wait_until(lambda: len(alerts.payloads()) >= 2, what="withdrawn alert on MQTT")
            assert alerts.payloads()[-1]["state"] == "undecided"
        late = Subscriber(system_broker, f"turnout/v1/{venue_id}/alerts/overflow_decision")  # retained
        try:
            got = wait_until(lambda: late.payloads(), what="retained alert")
            assert got[-1]["state"] == "undecided"
        finally:
            late.close()
    finally:
        alerts.client.publish(f"turnout/v1/{venue_id}/alerts/overflow_decision", b"", qos=1, retain=True)
        alerts.close()


def test_override_needs_an_overflow_event(sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock) -> None:
    app = _app(sqlite_target, None, venue_id, clock)
    with TestClient(app) as client:
        event = event_spec(venue_id, clock.now() + timedelta(hours=1), 200).model_copy(update={"overflow": None})
        setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event)
        app.state.hub.reload()
        operator = make_user(app.state.db, Role.operator)
        r = client.post("/api/v1/events/ev/decision/override", json={"state": "undecided"}, headers=auth(operator))
        assert r.status_code == 409 and "no overflow event" in r.json()["detail"]


# ------------------------------------------------------------------------------------ item 5
def test_changes_made_outside_the_api_are_picked_up(
    sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock, tmp_path: Path
) -> None:
    app = _app(sqlite_target, None, venue_id, clock)
    reg = tmp_path / "reg.csv"
    reg.write_text("email\n" + "".join(f"fan{i}@example.org\n" for i in range(7)))
    with TestClient(app) as client:
        setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, clock.now(), 200))
        hub = app.state.hub
        hub.reload()
        hub.tick()
        env = {**os.environ, "TURNOUT_DATABASE_URL": sqlite_target.url}
        env.pop("TURNOUT_CONFIG", None)
        r = subprocess.run(
            [sys.executable, "-m", "turnout.cli", "registrations", "import", str(reg), "--event", "ev"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        for _ in range(3):
            hub.tick()
        assert client.get("/api/v1/events/ev/live").json()["registrations"] == 7


# ------------------------------------------------------------------------------------ item 6
def test_no_stale_alert_burst_while_the_broker_is_away(
    sqlite_target: DbTarget, own_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    app = _app(sqlite_target, own_broker, venue_id, clock)
    bridge = app.state.mqtt
    with TestClient(app) as client:
        assert bridge.wait_connected(10)
        # the event starts later: an overflow deadline passing undecided would (rightly) raise its own alert
        start = clock.now() + timedelta(hours=3)
        setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, start, 200))
        hub = app.state.hub
        hub.reload()
        clock.advance(STALE_S + 1)
        pub = Publisher(own_broker)
        try:
            _publish_all(pub, hub, venue_id, 10, clock.now())
        finally:
            pub.close()
        hub.tick()
        assert client.get("/api/v1/alerts", params={"active": True}).json() == []
        own_broker.stop()
        wait_until(lambda: not bridge.connected.is_set(), what="link down")
        clock.advance(10 * STALE_S)  # we hear nothing: that is no news about the cameras
        hub.tick()
        assert client.get("/api/v1/alerts", params={"active": True}).json() == []
        own_broker.start()
        assert bridge.wait_connected(20)
        hub.tick()  # just reconnected: the cameras have not had time to speak yet
        assert client.get("/api/v1/alerts", params={"active": True}).json() == []
        clock.advance(STALE_S + 1)
        pub = Publisher(own_broker)
        try:
            pub.occupancy(venue_id, "cam0", clock.now(), {"s00": (100, 11, 11)}, seq=100)
            wait_until(lambda: hub.counters["accepted"] >= 3, what="cam0 back")
        finally:
            pub.close()
        hub.tick()  # cam1 stayed silent for a whole stale period while we listened
        active = client.get("/api/v1/alerts", params={"active": True}).json()
        assert [a["id"] for a in active] == [f"{venue_id}:camera_stale:cam1"]


# ------------------------------------------------------------------------------------ items 9a, 11
def test_cookie_only_authenticates_reads(sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock) -> None:
    app = _app(sqlite_target, None, venue_id, clock)
    with TestClient(app) as client:
        setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, clock.now(), 200))
        app.state.hub.reload()
        token = make_user(app.state.db, Role.operator)
        client.cookies.set("turnout_token", token)
        assert client.get("/api/v1/auth/me").status_code == 200
        body = {"state": "cancel_overflow"}
        assert client.post("/api/v1/events/ev/decision/override", json=body).status_code == 401
        r = client.post("/api/v1/events/ev/decision/override", json=body, headers=auth(token))
        assert r.status_code == 200 and r.json()["state"] == DecisionState.cancel_overflow.value


def test_bad_requests_get_4xx_not_500(sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock) -> None:
    app = _app(sqlite_target, None, venue_id, clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, clock.now(), 200))
        r = client.get("/api/v1/events/ev/history", params={"since": "2026-06-20T00:00:00"})
        assert r.status_code == 200 and r.json() == []
        r = client.get("/api/v1/events/ev/history", params={"since": "2000-01-01T00:00:00", "sections": True})
        assert r.status_code == 200
        assert client.get("/static/%00").status_code == 404
        admin = make_user(app.state.db, Role.admin)
        bad = event_spec(venue_id, clock.now(), 200).model_dump(mode="json")
        bad["overflow"]["deadline"] = (clock.now() + timedelta(hours=1)).isoformat()  # after the start
        r = client.put("/api/v1/events/ev", json=bad, headers=auth(admin))
        assert r.status_code == 422 and "between a day before doors_open and start" in r.text


def test_invalid_layout_result_is_a_502(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    app = _app(sqlite_target, system_broker, venue_id, clock)
    edge = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    ready = threading.Event()

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.payload:  # answer with a broken result that carries the request id
            rid = json.loads(msg.payload)["request_id"]
            c.publish(contract.layout_result_topic(venue_id, "cam0"), json.dumps({"request_id": rid, "ok": "?"}), 1)

    edge.on_message = on_message
    edge.on_subscribe = lambda *a: ready.set()
    edge.on_connect = lambda c, *a: c.subscribe(contract.layout_topic(venue_id, "cam0"), qos=1)
    edge.connect(system_broker.host, system_broker.port)
    edge.loop_start()
    try:
        assert ready.wait(10)
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            operator = make_user(app.state.db, Role.operator)
            body = {"sections": [{"id": "s00", "polygon": [[0, 0], [10, 0], [10, 10]]}]}
            r = client.put(f"/api/v1/calibration/{venue_id}/cam0/layout", json=body, headers=auth(operator))
            assert r.status_code == 502 and "invalid layout result" in r.json()["detail"]
    finally:
        edge.publish(contract.layout_topic(venue_id, "cam0"), b"", qos=1, retain=True).wait_for_publish(5)
        edge.disconnect()
        edge.loop_stop()
