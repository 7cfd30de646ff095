"""Registration import: per-row errors and atomicity, idempotence, quality figures, upload and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.app import create_app
from server.auth import Role
from server.db.models import Registration
from server.db.session import Database
from server.migrations import upgrade
from server.registrations import ImportError_, import_file, normalise_email
from server.sample_data import write_registrations_csv
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import auth, event_spec, make_user, setup_venue, venue_spec

START = datetime(2020, 6, 21, tzinfo=UTC)


@pytest.fixture
def db(db_target: DbTarget):
    database = Database(db_target.url, db_target.schema)
    upgrade(database)
    setup_venue(database, venue_spec("v1", 2, 2, 100), event_spec("v1", START, 100))
    yield database
    database.dispose()


def _count(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Registration))


GOOD = (
    "id,email,phone,name,ticket_type,registered_at\n"
    "1,ann@example.org,,Ann,general,2020-06-01T10:00:00Z\n"
    "2,A.N.N+rally@gmail.com,,Ann again,vip,2020-06-01T10:01:00Z\n"
    "3,a.n.n@googlemail.com,,Ann thrice,general,2020-06-01T10:02:00\n"
    "4,,+1 (918) 555-0100,Bob,general,\n"
    "5,bob@mailinator.com,918-555-0100,Bob again,press,2020-06-02T08:00:00+02:00\n"
)


def test_import_counts_totals_and_quality(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "reg.csv"
    path.write_text(GOOD)
    with db.session() as s:
        report = import_file(s, "ev", path)
    assert report.ok and report.imported == 5
    summary = report.summary
    assert summary["total"] == 5
    assert summary["by_ticket_type"] == {"general": 3, "vip": 1, "press": 1}
    # row 3 repeats row 2's Gmail address (dots/googlemail), row 5 repeats row 4's phone; row 2 differs from 1
    assert summary["duplicates"] == 2
    assert summary["disposable"] == 1
    assert summary["suspect"] == 2 and summary["suspect_share"] == pytest.approx(0.4)
    assert normalise_email("A.N.N+x@GoogleMail.com") == "ann@gmail.com"


def test_bad_rows_are_reported_and_nothing_is_imported(db: Database, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    with db.session() as s:
        assert import_file(s, "ev", good).ok
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,email,phone,name,ticket_type,registered_at\n"
        "1,carl@example.org,,Carl,general,2020-06-01T10:00:00Z\n"
        "2,not-an-email,,Dora,general,\n"
        "3,,,Eve,general,\n"
        "4,fay@example.org,12,Fay,general,\n"
        "5,gus@example.org,,Gus,general,yesterday\n"
        "6,hal@example.org,,Hal\n"
    )
    with db.session() as s:
        report = import_file(s, "ev", bad)
    assert not report.ok and report.imported == 0 and report.error_count == 5
    by_row = {e.row: (e.field, e.message) for e in report.errors}
    assert by_row[3][0] == "email" and "not-an-email" in by_row[3][1]
    assert by_row[4][0] == "email/phone"
    assert by_row[5][0] == "phone"
    assert by_row[6][0] == "registered_at" and "yesterday" in by_row[6][1]
    assert by_row[7][0] == "(row)" and "4 fields" in by_row[7][1]
    assert _count(db) == 5, "the earlier import must be untouched"


def test_reimport_gives_the_same_totals(db: Database, tmp_path: Path) -> None:
    path = write_registrations_csv(tmp_path / "r.csv", 5000, duplicate_share=0.2, disposable_share=0.1, burst_share=0.2)
    with db.session() as s:
        first = import_file(s, "ev", path).summary
    with db.session() as s:
        second = import_file(s, "ev", path).summary
    keys = ("total", "by_ticket_type", "duplicates", "disposable", "burst", "suspect", "source_sha256")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    assert _count(db) == 5000
    assert first["burst"] > 0 and first["duplicates"] > 0 and first["disposable"] > 0


def test_json_import_and_unreadable_files(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"registrations": [{"email": "x@example.org"}, {"phone": "+44 20 7946 0000"}]}))
    with db.session() as s:
        assert import_file(s, "ev", path).imported == 2
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"name,ticket\nx,y\n")
    with db.session() as s, pytest.raises(ImportError_, match="neither an 'email' nor a 'phone'"):
        import_file(s, "ev", bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email\nj\xe9r\xf4me@example.org\n".encode("latin-1"))
    with db.session() as s, pytest.raises(ImportError_, match="not UTF-8"):
        import_file(s, "ev", latin)
    with db.session() as s, pytest.raises(ImportError_, match="no event"):
        import_file(s, "nope", path)
    assert _count(db) == 2


def test_upload_endpoint_needs_operator_and_rejects_bad_files(sqlite_target: DbTarget, tmp_path: Path) -> None:
    app = create_app(make_settings(sqlite_target), run_ticks=False)
    with TestClient(app) as client:
        setup_venue(app.state.db, venue_spec("v1", 1, 1, 10), event_spec("v1", START, 10))
        viewer, operator = make_user(app.state.db, Role.viewer), make_user(app.state.db, Role.operator)
        files = {"file": ("reg.csv", GOOD.encode(), "text/csv")}
        url = "/api/v1/events/ev/registrations"
        assert client.post(url, files=files).status_code == 401
        assert client.post(url, files=files, headers=auth(viewer)).status_code == 403
        r = client.post(url, files=files, headers=auth(operator))
        assert r.status_code == 200 and r.json()["summary"]["total"] == 5
        assert app.state.hub.snapshot("ev")["registrations"] == 5
        bad = {"file": ("bad.csv", b"email\nnope\n", "text/csv")}
        r = client.post(url, files=bad, headers=auth(operator))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file", 2, "email"]
        assert client.get(f"{url}/summary").json()["total"] == 5
        rows = client.get(url, headers=auth(operator), params={"suspect": True}).json()
        assert {r["ref"] for r in rows} == {"3", "5"}


def test_cli_import(sqlite_target: DbTarget, tmp_path: Path) -> None:
    db = Database(sqlite_target.url)
    upgrade(db)
    setup_venue(db, venue_spec("v1", 1, 1, 10), event_spec("v1", START, 10))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD)
    bad.write_text("email\nok@example.org\nbroken\n")
    env = {**os.environ, "TURNOUT_DATABASE_URL": sqlite_target.url}
    cmd = [sys.executable, "-m", "turnout.cli", "registrations", "import"]
    r = subprocess.run([*cmd, str(good), "--event", "ev"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 5
    r = subprocess.run([*cmd, str(bad), "--event", "ev"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "row 3: email: not an email address: 'broken'" in r.stderr and "nothing imported" in r.stderr
    assert _count(db) == 5


def test_out_of_range_times_and_nul_characters_are_row_errors(db: Database) -> None:
    import io

    from server.registrations import FileTooLarge, import_registrations

    text = (
        "email,name,registered_at\n"
        "ok@example.org,Ann,2020-06-01T10:00:00Z\n"
        "late@example.org,Bob,9999-12-31T23:00:00-05:00\n"
        "nul@example.org,Ca\x00rl,\n"
    )
    with db.session() as s:
        report = import_registrations(s, "ev", io.BytesIO(text.encode()))
    assert not report.ok and report.imported == 0
    assert [(e.row, e.field) for e in report.errors] == [(3, "registered_at"), (4, "name")]
    assert "NUL" in report.errors[1].message
    with db.session() as s, pytest.raises(FileTooLarge, match="limit of 50 bytes"):
        import_registrations(s, "ev", io.BytesIO(text.encode()), max_bytes=50)
    assert _count(db) == 0


def test_upload_larger_than_the_limit_is_refused(sqlite_target: DbTarget) -> None:
    app = create_app(make_settings(sqlite_target, max_upload_mb=0.0001), run_ticks=False)  # 100 bytes
    with TestClient(app) as client:
        setup_venue(app.state.db, venue_spec("v1", 1, 1, 10), event_spec("v1", START, 10))
        operator = make_user(app.state.db, Role.operator)
        files = {"file": ("reg.csv", GOOD.encode(), "text/csv")}
        r = client.post("/api/v1/events/ev/registrations", files=files, headers=auth(operator))
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        assert client.get("/api/v1/events/ev/registrations/summary").status_code == 404
