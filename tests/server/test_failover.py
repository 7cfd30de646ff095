"""Two `turnout server` processes on PostgreSQL and one shared subscription: the evaluating one is killed
(SIGKILL) mid-event; the other takes the evaluator lease within two ticks of its expiry, continues the
decision from the database (a reversal of the dead one's decision), repeats no alert, and every seq the
edges published is applied exactly once across the two."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.db.session import Database
from server.migrations import upgrade
from tests.conftest import Broker, free_port
from tests.server.conftest import DbTarget
from tests.server.helpers import Publisher, Subscriber, event_spec, setup_venue, venue_spec, wait_until
from tests.server.test_restart import ServerProcess

TICK_S, LEASE_S = 0.2, 1.0
CAMS = [f"cam{i}" for i in range(4)]


def sections(occupied: int) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Each of the 10 sections (1,900 seats) at ``occupied``, by owning camera."""
    per_cam: dict[str, dict[str, tuple[int, int, int]]] = {c: {} for c in CAMS}
    for i in range(10):
        per_cam[CAMS[i % 4]][f"s{i:02d}"] = (1900, occupied, occupied)
    return per_cam


class Edges(threading.Thread):
    """Four cameras publishing ~40 messages a second (QoS 1, each acknowledged) until stopped."""

    def __init__(self, broker: Broker, venue: str, occupied: int) -> None:
        super().__init__(daemon=True)
        self.pub, self.venue, self.occupied = Publisher(broker), venue, occupied
        self.sent: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            cam = CAMS[i % 4]
            seq = self.pub.occupancy(self.venue, cam, datetime.now(UTC), sections(self.occupied)[cam])
            self.sent.append((cam, seq))
            i += 1
            time.sleep(0.025)


def received(record: Path) -> list[tuple[str, int]]:
    """(camera, seq) of every occupancy message a process received (its --record file)."""
    out = []
    for line in record.read_text().splitlines():
        msg = json.loads(line)
        if msg["topic"].endswith("/occupancy"):
            out.append((msg["payload"]["camera"], msg["payload"]["seq"]))
    return out


def metric(server: ServerProcess, name: str, labels: str = "") -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not served")


@pytest.mark.isolated
@pytest.mark.parametrize("db_target", ["postgresql"], indirect=True)
def test_evaluator_fails_over(db_target: DbTarget, own_broker: Broker, venue_id: str, tmp_path: Path) -> None:
    start = datetime.now(UTC) + timedelta(minutes=60)
    db = Database(db_target.url, db_target.schema)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 4, 10, 19_000), event_spec(venue_id, start, 19_000, deadline_min=20))
    db.dispose()
    env = {
        "TURNOUT_DATABASE_URL": db_target.url,
        "TURNOUT_DATABASE_SCHEMA": db_target.schema or "",
        "TURNOUT_MQTT_URL": own_broker.url,
        "TURNOUT_MQTT_VENUES": json.dumps([venue_id]),
        "TURNOUT_MQTT_SHARED_GROUP": "turnout",
        "TURNOUT_DECISION_HOLD_S": "0",
        "TURNOUT_MIN_FITTED_POINTS": "1",
        "TURNOUT_FORECAST_SMOOTH_MIN": "0",  # the test's crowd jumps from 3,000 to 19,000 at once: follow it at once
        "TURNOUT_CANCEL_MAX_RISK": "0.45",
        "TURNOUT_TICK_S": str(TICK_S),
        "TURNOUT_EVALUATOR_LEASE_S": str(LEASE_S),
        "TURNOUT_FLUSH_INTERVAL_S": "0.2",
        "TURNOUT_STALE_AFTER_S": "600",
    }
    base = {k: v for k, v in os.environ.items() if k != "TURNOUT_CONFIG"}
    servers = {
        name: ServerProcess(
            {**base, **env, "TURNOUT_MQTT_CLIENT_ID": f"server-{name}", "TURNOUT_RECORD_FILE": str(tmp_path / f"{name}.jsonl")},
            free_port(),
            tmp_path / f"{name}.log",
        )
        for name in ("a", "b")
    }
    a, b = servers["a"], servers["b"]
    alerts = Subscriber(own_broker, f"turnout/v1/{venue_id}/alerts/#")
    edges = Edges(own_broker, venue_id, 300)  # 3,000 of 19,000: the overflow can be cancelled
    try:
        a.start()
        wait_until(lambda: a.get("/healthz")["evaluating"], what="a holds the lease")
        b.start()
        assert not b.get("/healthz")["evaluating"]
        edges.start()
        wait_until(
            lambda: a.get("/api/v1/events/ev/live")["decision"]["state"] == "cancel_overflow", timeout=20, what="a cancels"
        )
        wait_until(lambda: any(p["state"] == "cancel_overflow" for p in alerts.payloads()), what="cancel alert on MQTT")
        assert metric(b, "turnout_messages_applied_total", '{kind="occupancy"}') > 0, "b ingests its share"
        wait_until(  # b serves the decision a took (it reads decisions and alerts every tick)
            lambda: b.get("/api/v1/events/ev/live")["decision"]["state"] == "cancel_overflow", timeout=3, what="b mirrors"
        )

        a.kill()
        killed = time.monotonic()
        wait_until(lambda: b.get("/healthz")["evaluating"], timeout=LEASE_S + 5, what="b takes over")
        took = time.monotonic() - killed
        print(f"takeover {took:.2f} s after SIGKILL (lease {LEASE_S} s, tick {TICK_S} s)")
        assert took <= LEASE_S + 2 * TICK_S + 0.5, f"took {took:.2f} s"
        assert metric(b, "turnout_evaluator_takeovers_total") == 1

        # a's supervisor (systemd) restarts it: it drains its persistent session (the broker queues a's share
        # of the group's messages while it is away) and comes back as a non-holder
        a_lines = len(received(tmp_path / "a.jsonl"))
        a.start()
        assert not a.get("/healthz")["evaluating"] and b.get("/healthz")["evaluating"]

        edges.occupied = 1900  # a full house: the crowd came after all; b must reverse a's decision, not start over
        live = wait_until(
            lambda: (s := b.get("/api/v1/events/ev/live"))["decision"]["state"] == "overflow_needed" and s,
            timeout=20,
            what="b reverses the cancel",
        )
        assert live["decision"]["reversed_from"] == "cancel_overflow"
        wait_until(lambda: any(p["state"] == "overflow_needed" for p in alerts.payloads()), what="reversal on MQTT")
        edges.stop.set()
        edges.join(10)
        total = len(edges.sent)
        wait_until(
            lambda: len(received(tmp_path / "a.jsonl")) + len(received(tmp_path / "b.jsonl")) >= total,
            timeout=10,
            what="every published message received",
        )
        time.sleep(0.5)  # nothing more may come

        got_a, got_b = received(tmp_path / "a.jsonl"), received(tmp_path / "b.jsonl")
        twice = [k for k, n in Counter(got_a + got_b).items() if n > 1]
        assert not twice, f"received (so applied) twice: {twice[:5]}"
        assert sorted(got_a + got_b) == sorted(edges.sent), f"{len(set(edges.sent) - set(got_a + got_b))} lost"
        # b, and a since its restart, applied every message they received (a before the kill: each camera's
        # share arrives in seq order, so each was applied)
        applied = '{kind="occupancy"}'
        assert metric(b, "turnout_messages_applied_total", applied) == len(got_b)
        assert metric(a, "turnout_messages_applied_total", applied) == len(got_a) - a_lines
        counts = Counter((p["id"], p["state"]) for p in alerts.payloads())
        assert counts[("ev:overflow_decision", "cancel_overflow")] == 1
        assert counts[("ev:overflow_decision", "overflow_needed")] == 1
        assert all(n == 1 for n in counts.values()), counts
        print(f"{total} messages: a {a_lines} before the kill, {len(got_a) - a_lines} after its restart; b {len(got_b)}")
    finally:
        edges.stop.set()
        for s in servers.values():
            s.kill()
        edges.pub.close()
        alerts.close()
