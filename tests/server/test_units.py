"""Settings, venue files, forecast and decision rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.db.models import Venue
from server.db.session import Database
from server.decision import DecisionMemory, DecisionRules, DecisionState, step
from server.forecast import curve_share, forecast_final
from server.migrations import upgrade
from server.settings import DEFAULT_ARRIVAL_CURVE, SettingsError, load_settings
from server.venues import VenueFileError, load_file, venue_dict

REPO = Path(__file__).resolve().parents[2]
START = datetime(2020, 6, 21, tzinfo=UTC)


def test_settings_from_yaml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("stale_after_s: 12\nmqtt_url: mqtt://broker:1884\n")
    monkeypatch.setenv("TURNOUT_STALE_AFTER_S", "7")
    s = load_settings(cfg)
    assert s.stale_after_s == 7 and s.mqtt_host == "broker" and s.mqtt_port == 1884
    cfg.write_text("arrival_curve: [[-60, 0.5], [0, 0.9]]\n")
    with pytest.raises(SettingsError, match=r"arrival_curve.*end at share 1\.0"):
        load_settings(cfg)
    cfg.write_text("mqtt_url: http://x\n")
    with pytest.raises(SettingsError, match="mqtt_url"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_example_settings_and_venue_files_load(tmp_path: Path) -> None:
    settings = load_settings(REPO / "deploy" / "server" / "turnout-server.yaml")
    assert settings.arrival_curve[-1] == (0.0, 1.0)
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    upgrade(db)
    with db.session() as s:
        parsed = load_file(s, REPO / "deploy" / "venue-tulsa.yaml")
        venue = venue_dict(s, s.get(Venue, "tulsa-bok"))
    assert venue["seats"] == parsed.events[0].capacity == 19_000
    assert len(venue["sections"]) >= 10 and len(venue["cameras"]) >= 4


def test_venue_file_errors_name_the_field(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    upgrade(db)
    bad = tmp_path / "v.yaml"
    bad.write_text(
        "venues:\n  - id: a\n    name: A\n    cameras: [{id: c1}]\n    sections: [{id: s1, seats: 10, cameras: [c2]}]\n"
    )
    with db.session() as s, pytest.raises(VenueFileError, match=r"unknown camera\(s\) \['c2'\]"):
        load_file(s, bad)
    bad.write_text(
        "events:\n  - {id: e, venue: a, name: E, doors_open: 2020-01-01T10:00:00, "
        "start: 2020-01-01T12:00:00Z, capacity: 10}\n"
    )
    with db.session() as s, pytest.raises(VenueFileError, match=r"doors_open.*time zone"):
        load_file(s, bad)


def _forecast(attendance: int, minutes: float, registrations: float | None = None):
    return forecast_final(
        attendance=attendance,
        now=START + timedelta(minutes=minutes),
        start=START,
        curve=DEFAULT_ARRIVAL_CURVE,
        spread=0.5,
        registrations=registrations,
        show_up=0.6,
        show_up_spread=0.5,
    )


def test_forecast_follows_the_curve_and_narrows_to_the_start() -> None:
    share = curve_share(DEFAULT_ARRIVAL_CURVE, -60)
    fc = _forecast(4000, -60)
    assert fc is not None and fc.value == pytest.approx(4000 / share)
    assert fc.low < fc.value < fc.high
    earlier, later = _forecast(1000, -150), _forecast(5000, -20)
    assert (earlier.high - earlier.low) / earlier.value > (later.high - later.low) / later.value
    at_start = _forecast(6200, 0)
    assert at_start.value == at_start.low == at_start.high == 6200
    assert _forecast(0, -300) is None


def test_inflated_registrations_do_not_drag_the_forecast() -> None:
    plain = _forecast(4000, -60)
    inflated = _forecast(4000, -60, registrations=400_000)
    assert inflated.prior_conflict and inflated.value == pytest.approx(plain.value)
    consistent = _forecast(4000, -60, registrations=9000)  # prior 5,400: inside the curve's band
    assert consistent.method == "blended" and not consistent.prior_conflict
    assert min(plain.value, 5400) <= consistent.value <= max(plain.value, 5400)
    assert (consistent.high - consistent.low) < (plain.high - plain.low)


def _rules(hold_s: float = 300) -> DecisionRules:
    return DecisionRules(
        capacity=19000,
        threshold=0.9,
        doors_open=START - timedelta(hours=4),
        deadline=START - timedelta(minutes=30),
        margin=0.03,
        hold_s=hold_s,
        min_share=0.4,
    )


def test_decision_needs_to_hold_and_freezes_at_the_deadline() -> None:
    mem = DecisionMemory(DecisionState.undecided, START - timedelta(hours=4))
    low = _forecast(3000, -90)
    t = START - timedelta(minutes=90)
    mem = step(mem, low, _rules(), t)
    assert mem.state == DecisionState.undecided and mem.candidate == DecisionState.cancel_overflow
    mem = step(mem, low, _rules(), t + timedelta(seconds=299))
    assert mem.state == DecisionState.undecided
    mem = step(mem, low, _rules(), t + timedelta(seconds=300))
    assert mem.state == DecisionState.cancel_overflow
    # an unclear forecast afterwards does not bring back "undecided"
    unclear = _forecast(int(0.9 * 19000 * 0.5), -90)
    mem = step(mem, unclear, _rules(), t + timedelta(seconds=400))
    assert mem.state == DecisionState.cancel_overflow
    # after the deadline the state is frozen even if the crowd surges
    full = _forecast(18000, -25)
    frozen = step(mem, full, _rules(), START - timedelta(minutes=25))
    assert frozen.frozen and frozen.state == DecisionState.cancel_overflow
    assert step(frozen, full, _rules(hold_s=0), START - timedelta(minutes=20)).state == DecisionState.cancel_overflow


def test_no_decision_before_enough_of_the_crowd_is_usually_in() -> None:
    mem = DecisionMemory(DecisionState.undecided, START - timedelta(hours=4))
    early = _forecast(50, -200)
    assert step(mem, early, _rules(hold_s=0), START - timedelta(minutes=200)).state == DecisionState.undecided
