"""An operator override sent to the process that does not hold the evaluator lease takes effect: the holder
adopts it at its next tick (frozen: it stops deciding), its alert is published once, and handing the decision
back to automatic on the non-holder lets the holder decide again. Two `turnout server` processes, PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.auth import Role
from server.db.session import Database
from server.migrations import upgrade
from tests.conftest import Broker, free_port
from tests.server.conftest import DbTarget
from tests.server.helpers import Subscriber, auth, event_spec, make_user, setup_venue, venue_spec, wait_until
from tests.server.test_failover import Edges
from tests.server.test_restart import ServerProcess

TICK_S, LEASE_S = 0.2, 1.0


@pytest.mark.isolated
@pytest.mark.parametrize("db_target", ["postgresql"], indirect=True)
def test_override_on_the_non_holder_takes_effect(db_target: DbTarget, own_broker: Broker, venue_id: str, tmp_path: Path) -> None:
    start = datetime.now(UTC) + timedelta(minutes=60)
    db = Database(db_target.url, db_target.schema)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 4, 10, 19_000), event_spec(venue_id, start, 19_000, deadline_min=20))
    token = make_user(db, Role.operator)
    db.dispose()
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_CONFIG"}
    env.update({
        "TURNOUT_DATABASE_URL": db_target.url, "TURNOUT_DATABASE_SCHEMA": db_target.schema or "",
        "TURNOUT_MQTT_URL": own_broker.url, "TURNOUT_MQTT_VENUES": json.dumps([venue_id]),
        "TURNOUT_MQTT_SHARED_GROUP": "turnout", "TURNOUT_DECISION_HOLD_S": "0", "TURNOUT_MIN_FITTED_POINTS": "1",
        "TURNOUT_FORECAST_SMOOTH_MIN": "0", "TURNOUT_CANCEL_MAX_RISK": "0.45", "TURNOUT_TICK_S": str(TICK_S),
        "TURNOUT_EVALUATOR_LEASE_S": str(LEASE_S), "TURNOUT_FLUSH_INTERVAL_S": "0.2", "TURNOUT_STALE_AFTER_S": "600",
    })  # fmt: skip
    a, b = (ServerProcess({**env, "TURNOUT_MQTT_CLIENT_ID": f"server-{n}"}, free_port(), tmp_path / f"{n}.log") for n in "ab")
    alerts = Subscriber(own_broker, f"turnout/v1/{venue_id}/alerts/overflow_decision")
    edges = Edges(own_broker, venue_id, 300)  # 3,000 of 19,000: the holder cancels the overflow
    decision = lambda p: p.get("/api/v1/events/ev/live")["decision"]  # noqa: E731
    try:
        a.start()
        wait_until(lambda: a.get("/healthz")["evaluating"], what="a holds the lease")
        b.start()
        assert not b.get("/healthz")["evaluating"]
        edges.start()
        wait_until(lambda: decision(a)["state"] == "cancel_overflow", timeout=20, what="a cancels")

        # the operator's request lands on b, the process without the lease
        r = httpx.post(f"{b.url}/api/v1/events/ev/decision/override", json={"state": "overflow_needed"},
                       headers=auth(token), timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        sent = time.monotonic()
        wait_until(lambda: decision(a)["state"] == "overflow_needed", timeout=2 * TICK_S + 2, what="the holder adopts it")
        took = time.monotonic() - sent
        d = decision(a)
        assert d["frozen"] and d["override_by"], d
        time.sleep(10 * TICK_S)  # the crowd still says "cancel": the holder must not decide over the override
        assert decision(a)["state"] == "overflow_needed" and decision(b)["state"] == "overflow_needed"
        assert a.get("/healthz")["evaluating"], "the lease did not move: the holder itself applied the override"

        # handed back to automatic, again through b: the holder decides again (and cancels again)
        r = httpx.post(f"{b.url}/api/v1/events/ev/decision/override", json={"state": "auto"}, headers=auth(token), timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: not decision(a)["frozen"], timeout=2 * TICK_S + 2, what="the holder back to automatic")
        wait_until(lambda: decision(a)["state"] == "cancel_overflow", timeout=20, what="the holder decides again")
        wait_until(lambda: [p["state"] for p in alerts.payloads()][-1:] == ["cancel_overflow"], what="its alert")
        time.sleep(5 * TICK_S)
        states = [p["state"] for p in alerts.payloads()]
        assert states == ["cancel_overflow", "overflow_needed", "cancel_overflow"], states
        overrides = [p for p in alerts.payloads() if p["figures"].get("override_by")]
        assert len(overrides) == 1 and Counter(p["id"] for p in alerts.payloads()) == {"ev:overflow_decision": 3}
        print(f"holder adopted the override {took:.2f} s after the non-holder answered (tick {TICK_S} s)")
    finally:
        edges.stop.set()
        for s in (a, b):
            s.kill()
        edges.pub.close()
        alerts.close()
