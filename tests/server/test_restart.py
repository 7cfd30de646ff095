"""The server process is killed mid-event and restarted: totals and alerts continue, no alert repeats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from server.db.session import Database
from server.migrations import upgrade
from tests.conftest import Broker, free_port
from tests.server.conftest import DbTarget
from tests.server.helpers import Publisher, Subscriber, event_spec, setup_venue, venue_spec, wait_until


class ServerProcess:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "turnout.cli", "server", "--port", str(self.port)],
                env=self.env,
                stdout=fh,
                stderr=fh,
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).json()["mqtt_connected"]
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, what="server up and connected")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def get(self, path: str) -> dict | list:
        return httpx.get(f"{self.url}{path}", timeout=5).json()


@pytest.fixture
def server_env(db_target: DbTarget, own_broker: Broker, venue_id: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "TURNOUT_DATABASE_URL": db_target.url,
        "TURNOUT_MQTT_URL": own_broker.url,
        "TURNOUT_MQTT_VENUES": json.dumps([venue_id]),
        "TURNOUT_MQTT_CLIENT_ID": f"server-{venue_id}",
        "TURNOUT_DECISION_HOLD_S": "0",
        # this test is about what survives a kill, not about the forecast: decide on one reading
        "TURNOUT_MIN_FITTED_POINTS": "1",
        "TURNOUT_CANCEL_MAX_RISK": "0.45",
        "TURNOUT_TICK_S": "0.2",
        "TURNOUT_FLUSH_INTERVAL_S": "0.2",
        "TURNOUT_STALE_AFTER_S": "600",
    }
    if db_target.schema:
        env["TURNOUT_DATABASE_SCHEMA"] = db_target.schema
    env.pop("TURNOUT_CONFIG", None)
    yield env


def test_kill_and_restart_mid_event(
    db_target: DbTarget, own_broker: Broker, venue_id: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start = now + timedelta(minutes=60)
    db = Database(db_target.url, db_target.schema)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 4, 10, 19_000), event_spec(venue_id, start, 19_000, deadline_min=20))
    db.dispose()
    server = ServerProcess(server_env, free_port(), tmp_path / "server.log")
    alerts = Subscriber(own_broker, f"turnout/v1/{venue_id}/alerts/#")
    pub = Publisher(own_broker)
    try:
        server.start()
        per_cam: dict[str, dict[str, tuple[int, int, int]]] = {f"cam{i}": {} for i in range(4)}
        for i in range(10):
            per_cam[f"cam{i % 4}"][f"s{i:02d}"] = (1900, 300, 300)
        per_cam["cam1"]["s01"] = (1900, 300, 2000)  # more people than seats: safety alert
        for cam, sections in per_cam.items():
            pub.occupancy(venue_id, cam, datetime.now(UTC), sections)
        live = wait_until(
            lambda: (s := server.get("/api/v1/events/ev/live"))["decision"]["state"] == "cancel_overflow" and s,
            timeout=20,
            what="cancel_overflow decision",
        )
        assert live["attendance"] == 3000
        before = {a["id"]: (a["state"], a["active"]) for a in server.get("/api/v1/alerts")}
        assert before[f"{venue_id}:section_over_capacity:s01"] == ("active", True)
        assert before["ev:overflow_decision"] == ("cancel_overflow", True)
        wait_until(lambda: len(alerts.payloads()) >= 2, what="alerts on MQTT")
        saved = Database(db_target.url, db_target.schema)

        def sections_saved() -> int:
            with saved.engine.connect() as c:  # closed each time: an open read would block DROP SCHEMA later
                return c.execute(
                    text("SELECT count(*) FROM section_states WHERE venue_id = :v"), {"v": venue_id}
                ).scalar_one()

        try:  # the live state is flushed (every 0.2 s): wait until all four readings are in the database
            wait_until(lambda: sections_saved() >= 10, what="live state saved")
        finally:
            saved.dispose()
        server.kill()

        # while the server is down: a new count (queued by the broker for its persistent session) and a repeat
        pub.occupancy(venue_id, "cam0", datetime.now(UTC), {"s00": (1900, 400, 400)})
        pub.occupancy(venue_id, "cam1", datetime.now(UTC), {"s01": (1900, 5, 5)}, seq=pub.seq["cam1"])
        server.start()
        live = wait_until(
            lambda: (s := server.get("/api/v1/events/ev/live"))["attendance"] == 3100 and s,
            timeout=15,
            what="totals continued (+100 from the queued message, repeat ignored)",
        )
        assert live["decision"]["state"] == "cancel_overflow"
        seen: set[str] = set()  # several evaluation ticks after the restart (each stamps its figures)
        wait_until(
            lambda: seen.add(server.get("/api/v1/events/ev/live")["decision"]["figures"]["at"]) or len(seen) >= 4,
            what="evaluation ticks after the restart",
        )
        after = {a["id"]: (a["state"], a["active"]) for a in server.get("/api/v1/alerts")}
        assert after == before
        counts = Counter((p["id"], p["state"]) for p in alerts.payloads())
        assert counts[("ev:overflow_decision", "cancel_overflow")] == 1
        assert all(n == 1 for n in counts.values()), counts
    finally:
        server.kill()
        pub.close()
        alerts.close()
