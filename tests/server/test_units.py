"""Settings and venue files (forecast and decision: test_forecast.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.db.models import Venue
from server.db.session import Database
from server.migrations import upgrade
from server.settings import SettingsError, load_settings
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
