"""Issue 8 rows 9 and 11: one bad event never stops the evaluation of the others; an operator override
sends the figures of its own moment."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from server.clock import SimulatedClock
from server.db.session import Database
from server.decision import DecisionState
from server.live import LiveHub
from server.migrations import upgrade
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import event_spec, setup_venue, venue_spec


def _occ(venue: str, cam: str, seq: int, occupied: int, clock: SimulatedClock) -> bytes:
    return json.dumps({
        "v": 1, "venue": venue, "camera": cam, "seq": seq, "ts": clock.now().isoformat(),
        "sections": [{"id": "s00", "seats": 500, "occupied": occupied, "people": occupied}],
        "model": "yolo11n", "processing": {"fps": 1.0, "latency_ms": 10.0, "frames": seq},
    }).encode()


def _hub(sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock) -> tuple[LiveHub, Database]:
    db = Database(sqlite_target.url)
    upgrade(db)
    setup_venue(db, venue_spec(venue_id, 1, 1, 500), event_spec(venue_id, clock.now() + timedelta(hours=2), 500))
    hub = LiveHub(make_settings(sqlite_target, None, [venue_id]), db, clock)
    return hub, db


def test_a_corrupt_event_does_not_stop_the_others(sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    hub, db = _hub(sqlite_target, venue_id, clock)
    with db.session() as s:  # written by something that skipped the API's validation (an old version, SQL by hand)
        s.execute(text(
            "INSERT INTO events (id, venue_id, name, doors_open, start, capacity, overflow_name, overflow_capacity,"
            " overflow_deadline, overflow_threshold) VALUES ('bad', :v, 'Bad', :d, :st, 500, 'O', 100, :dl, 0.9)"
        ), {"v": venue_id, "d": datetime(1, 1, 1, tzinfo=UTC), "st": datetime(9999, 12, 31, tzinfo=UTC),
            "dl": datetime(9999, 12, 30, tzinfo=UTC)})
        s.commit()
    hub.reload()
    hub.handle(f"turnout/v1/{venue_id}/cam0/occupancy", _occ(venue_id, "cam0", 1, 120, clock))
    results = hub.tick(flush=True)
    assert [r.event_id for r in results if r.event_id == "ev"] == ["ev"]  # the good event was evaluated
    assert hub.snapshot("ev")["decision"]["figures"]["attendance"] == 120
    clock.advance(60)
    hub.handle(f"turnout/v1/{venue_id}/cam0/occupancy", _occ(venue_id, "cam0", 2, 150, clock))
    hub.tick(flush=True)  # and keeps being evaluated, tick after tick; the live state is still saved
    assert hub.snapshot("ev")["decision"]["figures"]["attendance"] == 150
    with db.session() as s:
        assert s.execute(text("SELECT occupied FROM section_states")).scalar_one() == 150
    assert hub.failures["bad"] >= 2 and sum(hub.failures.values()) == hub.failures["bad"]  # counted, isolated
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and "bad" in r.getMessage()]
    assert len(logged) == 1 and "evaluation of event bad failed" in logged[0].getMessage()  # once a minute
    db.dispose()


def test_override_alert_carries_the_figures_of_its_moment(
    sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock
) -> None:
    hub, db = _hub(sqlite_target, venue_id, clock)
    sent: list[dict] = []
    hub.alerts.set_publisher(lambda _topic, payload: sent.append(json.loads(payload)))
    hub.reload()
    hub.handle(f"turnout/v1/{venue_id}/cam0/occupancy", _occ(venue_id, "cam0", 1, 40, clock))
    hub.tick()  # the first tick sees 40 people
    clock.advance(600)
    hub.handle(f"turnout/v1/{venue_id}/cam0/occupancy", _occ(venue_id, "cam0", 2, 310, clock))
    hub.override_decision("ev", DecisionState.overflow_needed, "ops")  # no tick in between
    alert = next(a for a in sent if a["kind"] == "overflow_decision")
    assert alert["state"] == "overflow_needed" and alert["figures"]["override_by"] == "ops"
    assert alert["figures"]["attendance"] == 310  # not the 40 of the last tick
    assert alert["figures"]["at"] == clock.now().isoformat()
    assert "set by ops" in alert["message"]
    db.dispose()


def test_an_override_commits_its_decision_and_its_alert_together(
    sqlite_target: DbTarget, venue_id: str, clock: SimulatedClock
) -> None:
    """Another process (the lease holder) adopts saved decisions and reloads alerts every tick: had it seen the
    override's decision before its alert, it would have published the same alert a second time (found under
    load by tests/server/test_override_nonholder.py). At every commit the two must agree."""
    hub, db = _hub(sqlite_target, venue_id, clock)
    hub.reload()
    hub.handle(f"turnout/v1/{venue_id}/cam0/occupancy", _occ(venue_id, "cam0", 1, 40, clock))
    hub.tick()
    reader = Database(sqlite_target.url)
    seen: list[tuple[str | None, str | None]] = []

    def look(_session: Session) -> None:  # what any other process can read right after this commit
        with reader.session() as s:
            decision = s.execute(text("SELECT state FROM decisions WHERE event_id = 'ev'")).scalar_one_or_none()
            alert = s.execute(text("SELECT state FROM alerts WHERE kind = 'overflow_decision'")).scalar_one_or_none()
        seen.append((decision, alert))

    event.listen(Session, "after_commit", look)
    try:
        hub.override_decision("ev", DecisionState.overflow_needed, "ops")
        hub.override_decision("ev", DecisionState.cancel_overflow, "ops")
    finally:
        event.remove(Session, "after_commit", look)
    assert seen and seen[-1] == ("cancel_overflow", "cancel_overflow"), seen
    decided = {"overflow_needed", "cancel_overflow"}
    assert all(d == a for d, a in seen if {d, a} & decided), seen  # never one without the other, either way
    reader.dispose()
    db.dispose()
