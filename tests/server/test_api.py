"""API, auth and storage on SQLite and PostgreSQL; live figures from messages through the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.auth import Role, create_user
from server.clock import SimulatedClock
from server.db.session import Database
from server.ingest import MqttBridge
from server.live import LiveHub
from server.migrations import current, upgrade
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


@pytest.fixture
def app_client(db_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock):
    settings = make_settings(db_target, system_broker, [venue_id])
    app = create_app(settings, clock=clock, run_ticks=False)
    with TestClient(app) as client:
        assert app.state.mqtt.wait_connected(10)
        yield client, app


def test_migrations_are_idempotent(db_target: DbTarget) -> None:
    db = Database(db_target.url, db_target.schema)
    upgrade(db)
    upgrade(db)
    from alembic.script import ScriptDirectory

    from server.migrations import alembic_config

    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert head is not None and head != "0001" and current(db) == head
    db.dispose()


def test_auth_roles_on_writes_and_personal_data(app_client, venue_id: str, clock: SimulatedClock) -> None:
    client, app = app_client
    venue = venue_spec(venue_id, 2, 3, 300).model_dump()
    assert client.put(f"/api/v1/venues/{venue_id}", json=venue).status_code == 401
    viewer = make_user(app.state.db, Role.viewer)
    operator = make_user(app.state.db, Role.operator)
    admin = make_user(app.state.db, Role.admin)
    assert client.put(f"/api/v1/venues/{venue_id}", json=venue, headers=auth(viewer)).status_code == 403
    assert client.put(f"/api/v1/venues/{venue_id}", json=venue, headers=auth(operator)).status_code == 403
    assert client.put(f"/api/v1/venues/{venue_id}", json=venue, headers=auth("tok_wrong")).status_code == 401
    r = client.put(f"/api/v1/venues/{venue_id}", json=venue, headers=auth(admin))
    assert r.status_code == 200, r.text
    assert r.json()["seats"] == 300
    event = event_spec(venue_id, clock.now(), 300).model_dump(mode="json")
    assert client.put("/api/v1/events/ev", json=event, headers=auth(operator)).status_code == 403
    assert client.put("/api/v1/events/ev", json=event, headers=auth(admin)).status_code == 200
    # personal data: operator or admin only
    assert client.get("/api/v1/events/ev/registrations").status_code == 401
    assert client.get("/api/v1/events/ev/registrations", headers=auth(viewer)).status_code == 403
    assert client.get("/api/v1/events/ev/registrations", headers=auth(operator)).status_code == 200
    # decision override and alert acknowledgement are operator writes
    body = {"state": "cancel_overflow"}
    assert client.post("/api/v1/events/ev/decision/override", json=body).status_code == 401
    assert client.post("/api/v1/events/ev/decision/override", json=body, headers=auth(viewer)).status_code == 403
    r = client.post("/api/v1/events/ev/decision/override", json=body, headers=auth(operator))
    assert r.status_code == 200 and r.json()["state"] == "cancel_overflow" and r.json()["frozen"]
    alerts = client.get("/api/v1/alerts", params={"event": "ev"}).json()
    assert [a["state"] for a in alerts] == ["cancel_overflow"]
    assert alerts[0]["message"].endswith(")") and "(set by " in alerts[0]["message"]
    ack = f"/api/v1/alerts/{alerts[0]['id']}/ack"
    assert client.post(ack, headers=auth(viewer)).status_code == 403
    r = client.post(ack, headers=auth(operator))
    assert r.status_code == 200 and r.json()["acknowledged"]


def test_login_returns_a_token_and_rejects_wrong_password(app_client) -> None:
    client, app = app_client
    with app.state.db.session() as s:
        user = create_user(s, "ops", Role.operator, "correct horse battery")
        stored = user.password_hash
    assert "correct horse" not in stored and stored.startswith("scrypt$")
    assert client.post("/api/v1/auth/login", json={"username": "ops", "password": "nope"}).status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "ops", "password": "correct horse battery"})
    assert r.status_code == 200
    token = r.json()["token"]
    me = client.get("/api/v1/auth/me", headers=auth(token))
    assert me.json() == {"user": "ops", "role": "operator"}
    out = client.post("/api/v1/auth/logout", headers=auth(token))
    assert out.status_code == 204 and 'turnout_token=""' in out.headers.get("set-cookie", "")
    assert client.get("/api/v1/auth/me", headers=auth(token)).status_code == 401  # revoked everywhere


def test_live_figures_count_each_section_once(app_client, system_broker: Broker, venue_id: str, clock) -> None:
    client, app = app_client
    admin = make_user(app.state.db, Role.admin)
    venue = venue_spec(venue_id, 2, 3, 300)  # s02 is owned by cam0 and backed up by cam1
    client.put(f"/api/v1/venues/{venue_id}", json=venue.model_dump(), headers=auth(admin))
    client.put(
        "/api/v1/events/ev",
        json=event_spec(venue_id, clock.now() + timedelta(hours=1), 300).model_dump(mode="json"),
        headers=auth(admin),
    )
    hub = app.state.hub
    pub = Publisher(system_broker)
    try:
        now = clock.now()
        pub.occupancy(venue_id, "cam0", now, {"s00": (100, 40, 42), "s02": (100, 10, 10)})
        pub.occupancy(venue_id, "cam1", now, {"s01": (100, 30, 30), "s02": (100, 12, 12)})
        wait_until(lambda: hub.counters["accepted"] >= 2, what="2 messages ingested")
        live = client.get("/api/v1/events/ev/live").json()
        assert live["attendance"] == 40 + 30 + 10  # s02 from its owner cam0 only
        assert live["people"] == 42 + 30 + 10
        s02 = next(s for s in live["sections"] if s["id"] == "s02")
        assert s02["camera"] == "cam0" and not s02["stale"]
        # the owner goes offline: the backup camera takes over s02
        pub.status(venue_id, "cam0", "offline", now + timedelta(seconds=1))
        wait_until(lambda: hub.counters["status"] >= 1, what="status ingested")
        live = client.get("/api/v1/events/ev/live").json()
        s02 = next(s for s in live["sections"] if s["id"] == "s02")
        assert s02["camera"] == "cam1" and s02["occupied"] == 12
        assert {c["id"]: c["state"] for c in live["cameras"]}["cam0"] == "offline"
        assert live["fill_ratio"] == pytest.approx(live["attendance"] / 300, abs=1e-4)
    finally:
        pub.raw(f"turnout/v1/{venue_id}/cam0/status", b"", retain=True)  # clear the retained status
        pub.close()


def test_stale_camera_alert_series_retention_and_history_csv(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock
) -> None:
    settings = make_settings(
        sqlite_target, system_broker, [venue_id], stale_after_s=30, retention_days=0.01, series_interval_s=30
    )
    app = create_app(settings, clock=clock, run_ticks=False)
    alerts = Subscriber(system_broker, f"turnout/v1/{venue_id}/alerts/camera_stale")
    pub = Publisher(system_broker)
    try:
        with TestClient(app) as client:
            assert app.state.mqtt.wait_connected(10)
            start = clock.now() + timedelta(hours=2)  # the clock only moves forward from the MQTT connect
            setup_venue(app.state.db, venue_spec(venue_id, 2, 2, 200), event_spec(venue_id, start, 200))
            hub = app.state.hub
            hub.reload()
            for cam, sec in (("cam0", "s00"), ("cam1", "s01")):
                pub.occupancy(venue_id, cam, clock.now(), {sec: (100, 10, 10)})
            wait_until(lambda: hub.counters["accepted"] >= 2, what="messages")
            hub.tick()
            assert client.get("/api/v1/alerts", params={"active": True}).json() == []
            clock.advance(45)  # cam1 falls silent, cam0 keeps talking
            pub.occupancy(venue_id, "cam0", clock.now(), {"s00": (100, 12, 12)})
            wait_until(lambda: hub.counters["accepted"] >= 3, what="message")
            hub.tick()
            live = client.get("/api/v1/events/ev/live").json()
            assert {c["id"]: c["state"] for c in live["cameras"]} == {"cam0": "online", "cam1": "stale"}
            assert next(s for s in live["sections"] if s["id"] == "s01")["stale"]
            active = client.get("/api/v1/alerts", params={"active": True}).json()
            assert [a["id"] for a in active] == [f"{venue_id}:camera_stale:cam1"]
            got = wait_until(lambda: alerts.payloads(), what="stale alert on MQTT")
            assert got[0]["state"] == "active" and got[0]["figures"]["camera"] == "cam1"
            pub.occupancy(venue_id, "cam1", clock.now(), {"s01": (100, 11, 11)})
            wait_until(lambda: hub.counters["accepted"] >= 4, what="message")
            hub.tick()
            assert client.get("/api/v1/alerts", params={"active": True}).json() == []
            wait_until(lambda: len(alerts.payloads()) == 2, what="cleared alert on MQTT")
            assert alerts.payloads()[1]["state"] == "cleared"
            rows = client.get("/api/v1/events/ev/history").json()
            assert [r["attendance"] for r in rows] == [20, 22]  # one sample per 30 s
            csv_text = client.get("/api/v1/events/ev/history", params={"format": "csv"}).text
            assert csv_text.splitlines()[0].startswith("ts,attendance,people,forecast")
            sections = client.get("/api/v1/events/ev/history", params={"sections": True}).json()
            assert {r["section"] for r in sections} == {"s00", "s01"}
            clock.advance(0.01 * 86400 + 120)  # past the retention: old samples are deleted
            hub.tick()
            rows = client.get("/api/v1/events/ev/history").json()
            assert len(rows) == 1 and rows[0]["attendance"] == 23
    finally:
        pub.close()
        alerts.close()


def test_shared_subscription_splits_the_load(sqlite_target: DbTarget, system_broker: Broker, venue_id: str) -> None:
    settings = make_settings(sqlite_target, system_broker, [venue_id], mqtt_shared_group=f"g{venue_id}")
    db = Database(settings.database_url)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 20, 20, 2000), None)
    hubs, bridges = [], []
    for _ in range(2):
        hub = LiveHub(settings, db)
        hub.reload()
        bridge = MqttBridge(settings, hub)
        bridge.start()
        assert bridge.wait_subscribed(10)  # the broker acknowledged its shared subscription
        hubs.append(hub)
        bridges.append(bridge)
    pub = Publisher(system_broker)
    try:
        for i in range(200):
            cam = f"cam{i % 20}"
            pub.occupancy(venue_id, cam, datetime.now(UTC), {f"s{i % 20:02d}": (100, i % 100, i % 100)})
        wait_until(lambda: sum(h.counters["accepted"] for h in hubs) >= 200, what="all messages")
        counts = [h.counters["accepted"] for h in hubs]
        assert sum(counts) == 200 and min(counts) > 0, counts
        # each process saves what it got; a tick merges the others' newer readings
        for h in hubs:
            h.tick(flush=True)
        hubs[0].tick()
        readings = hubs[0].venues[venue_id].readings
        assert {sid for sid, _ in readings} == {f"s{i:02d}" for i in range(20)}
        want = {f"s{i % 20:02d}": i % 100 for i in range(200)}  # the last message per section
        assert {sid: r.occupied for (sid, cam), r in readings.items() if cam == f"cam{int(sid[1:])}"} == want
    finally:
        pub.close()
        for b in bridges:
            b.stop()
        db.dispose()


def test_users_and_tokens_commands(sqlite_target: DbTarget, tmp_path) -> None:
    env = {**os.environ, "TURNOUT_DATABASE_URL": sqlite_target.url}
    cli = [sys.executable, "-m", "turnout.cli"]
    run = {"env": env, "capture_output": True, "text": True, "timeout": 60}
    r = subprocess.run(
        [*cli, "users", "create", "ops", "--role", "operator", "--password-stdin"], input="long enough pw\n", **run
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*cli, "users", "create", "ops", "--role", "operator", "--password-stdin"], input="long enough pw\n", **run
    )
    assert r.returncode == 1 and "already exists" in r.stderr
    r = subprocess.run([*cli, "users", "create", "x", "--role", "boss", "--no-password"], **run)
    assert r.returncode == 2 and "unknown role 'boss'" in r.stderr
    r = subprocess.run([*cli, "tokens", "create", "--user", "ops"], **run)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("tok_")
    r = subprocess.run([*cli, "tokens", "create", "--user", "nobody"], **run)
    assert r.returncode == 1 and "no user 'nobody'" in r.stderr
    app = create_app(make_settings(sqlite_target), run_ticks=False)
    with TestClient(app) as client:
        assert client.get("/api/v1/auth/me", headers=auth(token)).json() == {"user": "ops", "role": "operator"}
        login = client.post("/api/v1/auth/login", json={"username": "ops", "password": "long enough pw"})
        assert login.status_code == 200 and login.json()["role"] == "operator"
    with app.state.db.engine.connect() as c:
        stored = " ".join(str(v) for row in c.exec_driver_sql("select * from tokens").all() for v in row)
    assert token not in stored
