"""The post-event report (`turnout report`, GET /events/{id}/report) on a real, replayed event.

One Tulsa-like event (deploy/venue-tulsa.yaml: 6,200 people, a camera silent for 25 minutes, an operator
override, acknowledged alerts, organizer notifications, registrations by ticket type) is run through the
server's real ingest, forecast, decision and alert code on simulated time; its database then gives the report
in HTML, PDF (checked through pdftotext and pdftoppm) and CSV.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from server.auth import Role
from server.clock import SimulatedClock
from server.db.models import AlertDelivery, EventSample
from server.db.session import Database
from server.decision import DecisionState
from server.live.hub import LiveHub
from server.migrations import upgrade
from server.registrations import import_file
from server.report import render
from server.report.csv import HEADER
from server.report.gather import gather
from server.report.model import Report
from server.settings import load_settings
from server.venues import EventIn, load_file, save_event
from tests.server.arrivals import START, TULSA, USUAL, Scenario, record
from tests.server.helpers import auth, make_user
from turnout.cli import app as cli_app

EVENT = "tulsa-rally"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"
SILENT = ("cam-west", -150.0, -125.0)
TICKETS = {"general": 9_000, "vip": 1_500, "press": 500}


@dataclass(frozen=True)
class Finished:
    url: str
    report: Report
    final: int
    samples: int


def _registrations(path: Path) -> Path:
    lines = ["email,ticket_type"]
    n = 0
    for ticket, count in TICKETS.items():
        for _ in range(count):
            lines.append(f"fan{n}@example.org,{ticket}")
            n += 1
    lines += ["fan1@example.org,general", "fan2@example.org,general"]  # two duplicates
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The event replayed minute by minute to 5 minutes after its start, as `turnout replay` does."""
    work = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{work / 'turnout.db'}"
    db = Database(url)
    upgrade(db)
    with db.session() as s:
        load_file(s, TULSA)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)  # still to come: no data yet
        save_event(s, EventIn(id="next-rally", venue="tulsa-bok", name="Next rally", doors_open=start - timedelta(hours=4),
                              start=start, capacity=19_000))  # fmt: skip
        s.commit()
        assert import_file(s, EVENT, _registrations(work / "regs.csv")).ok
    settings = load_settings(None, database_url=url, mqtt_enabled=False, config_watch=False)
    messages = record(Scenario(6_200, USUAL, silent=(SILENT,), seed=5))
    clock = SimulatedClock(messages[0].ts)
    hub = LiveHub(settings, db, clock)
    hub.reload()
    step, next_tick = timedelta(minutes=1), messages[0].ts
    overridden = acked = False

    def tick_until(ts: datetime) -> None:
        nonlocal next_tick, overridden, acked
        while next_tick <= ts:
            clock.set(next_tick)
            hub.tick(next_tick, flush=True)
            minute = (next_tick - START).total_seconds() / 60
            if minute >= -45 and not overridden:  # an operator confirms the cancel by hand: frozen, with a name
                hub.override_decision(EVENT, DecisionState.cancel_overflow, "alice")
                overridden = True
            if minute >= -40 and not acked:
                with db.session() as s:
                    for a in hub.alerts.all():
                        if a["kind"] in ("overflow_decision", "camera_stale"):
                            hub.alerts.acknowledge(s, a["id"], "bob", next_tick)
                acked = True
            next_tick += step

    for rec in messages:
        tick_until(rec.ts - timedelta(microseconds=1))
        clock.set(rec.ts)
        hub.handle(rec.topic, rec.payload)
    tick_until(START + timedelta(minutes=5))
    with db.session() as s:
        for status, attempts, error in (("sent", 1, None), ("failed", 5, "SMTP 550 mailbox unavailable")):
            s.add(AlertDelivery(
                id=f"d-{status}", alert_id=f"{EVENT}:overflow_decision", event_id=EVENT, alert_state="cancel_overflow",
                target="Organizers e-mail" if status == "sent" else "Press desk", target_url="mailto://***",
                status=status, attempts=attempts, error=error, created_at=START - timedelta(minutes=70),
                updated_at=START - timedelta(minutes=69), delivered_at=START - timedelta(minutes=70) if status == "sent" else None,
            ))  # fmt: skip
        s.commit()
        samples = s.scalar(select(func.count()).select_from(EventSample).where(EventSample.event_id == EVENT))
        report = gather(s, EVENT, clock.now())
    db.dispose()
    final = next(p.attendance for p in reversed(report.series) if p.ts <= START)
    yield Finished(url, report, final, samples or 0)


def test_the_report_holds_what_happened(finished: Finished) -> None:
    r = finished.report
    assert r.final and r.final_attendance == finished.final and 5_500 <= finished.final <= 6_800
    # the automatic cancel, then the operator's override with her name
    auto = [s for s in r.timeline if s.state == "cancel_overflow" and s.by is None]
    assert auto and auto[0].ts < START - timedelta(minutes=45), r.timeline
    by_alice = [s for s in r.timeline if s.by == "alice"]
    assert len(by_alice) == 1 and by_alice[0].frozen and by_alice[0].state == "cancel_overflow"
    assert r.decision_state == "cancel_overflow" and r.decision_override_by == "alice"
    # forecasts made at T-120/-90/-60 against the final; the band holds the final by T-60
    checks = {c.minutes_before: c for c in r.forecast_checks}
    assert set(checks) == {120, 90, 60} and all(c.p50 is not None and c.final == finished.final for c in checks.values())
    assert checks[60].within_band, checks[60]
    # show-up by ticket type from the imported registrations
    assert r.registrations is not None and r.registrations.total == 11_002
    assert {t.ticket_type: t.registered for t in r.registrations.by_ticket_type} == {"general": 9_002, "vip": 1_500, "press": 500}
    assert r.show_up == pytest.approx(finished.final / 11_002)
    # the silent camera's 25 minutes show in its uptime, the others were up throughout
    up = {c.id: c for c in r.cameras}
    assert 0.85 < (up["cam-west"].uptime or 0) < 0.92 and up["cam-west"].incidents == 1, up["cam-west"]
    assert all(c.uptime == 1.0 for k, c in up.items() if k != "cam-west")
    # alerts with who acknowledged them; every seated section has a fill
    stale = [a for a in r.alerts if a.kind == "camera_stale" and a.subject == "cam-west"]
    assert stale and stale[0].cleared_at is not None
    assert any(a.kind == "overflow_decision" and a.acknowledged_by == "bob" for a in r.alerts)
    assert len(r.sections) == 21 and sum(s.occupied or 0 for s in r.sections) == finished.final
    assert [d.status for d in r.deliveries] == ["sent", "failed"]


def test_pdf_shows_the_figures(finished: Finished, tmp_path: Path) -> None:
    pdf = render(finished.report, "pdf")
    assert pdf.startswith(b"%PDF")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.pdf").write_bytes(pdf)
    src = tmp_path / "report.pdf"
    src.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(src), "-"], capture_output=True, text=True, check=True).stdout
    assert f"{finished.final:,}" in text and "," in f"{finished.final:,}"
    assert "Final report" in text and "Cancel the overflow event" in text and "operator alice" in text
    assert "cam-west" in text and "bob" in text and "Press desk" in text
    assert "T−120 min" in text or "T-120 min" in text
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(src), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 2
    for page in pages:
        shutil.copy(page, ARTIFACTS / page.name)
        dark = float((np.asarray(Image.open(page).convert("L")) < 200).mean())
        assert dark > 0.03, f"{page.name} is nearly blank ({dark:.1%} ink)"
    # the chart is drawn: page 1 has the band's blue, not only text
    rgb = np.asarray(Image.open(pages[0]).convert("RGB")).astype(int)
    blue = (rgb[..., 2] > 200) & (rgb[..., 0] < 200) & (rgb[..., 1] > 150)
    assert int(blue.sum()) > 500


def test_html_is_self_contained(finished: Finished) -> None:
    html = render(finished.report, "html").decode()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.html").write_text(html)
    assert html.count("<svg") == 2  # attendance chart and seating map
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#|data:)""", html), "links to an outside resource"
    assert not re.search(r"url\(\s*['\"]?(?!#|data:)", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert f"{finished.final:,}" in html and 'data-status="final"' in html


def test_csv_has_the_documented_header_and_the_rows(finished: Finished) -> None:
    text = render(finished.report, "csv").decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == HEADER
    assert HEADER == ("record", "ts", "local_time", "attendance", "queue", "forecast_p05", "forecast_p50",
                      "forecast_p95", "p_reach_target", "decision", "by", "detail")  # fmt: skip
    summary = rows[1]
    assert summary[0] == "summary" and int(summary[3]) == finished.final and summary[-1] == "final"
    samples = [r for r in rows if r[0] == "sample"]
    assert len(samples) == finished.samples
    assert all(datetime.fromisoformat(a[1]) < datetime.fromisoformat(b[1]) for a, b in pairwise(samples))
    decisions = [r for r in rows if r[0] == "decision"]
    assert ["cancel_overflow", "alice"] in [[r[9], r[10]] for r in decisions]
    assert ["cancel_overflow", "automatic"] in [[r[9], r[10]] for r in decisions]
    assert len([r for r in rows if r[0] == "delivery"]) == 2


def test_cli_writes_each_format_and_refuses_bad_input(finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_DATABASE_URL", finished.url)
    runner = CliRunner()
    for fmt in ("html", "csv"):
        out = tmp_path / f"r.{fmt}"
        res = runner.invoke(cli_app, ["report", "--event", EVENT, "--format", fmt, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert "final" in res.output and out.stat().st_size > 1000
    res = runner.invoke(cli_app, ["report", "--event", "no-such-event"])
    assert res.exit_code == 2 and "no event 'no-such-event'" in res.output and EVENT in res.output
    res = runner.invoke(cli_app, ["report", "--event", EVENT, "--format", "docx"])
    assert res.exit_code == 2
    # an event that has not happened yet: a report that says it is provisional, with no data to show
    out = tmp_path / "next.html"
    res = runner.invoke(cli_app, ["report", "--event", "next-rally", "--out", str(out)])
    assert res.exit_code == 0 and "PROVISIONAL" in res.output, res.output
    html = out.read_text()
    assert 'data-status="provisional"' in html and "PROVISIONAL" in html and "No decision was taken" in html


def test_download_route_needs_a_sign_in(finished: Finished) -> None:
    settings = load_settings(None, database_url=finished.url, mqtt_enabled=False, config_watch=False, public_read=True)
    from server.app import create_app

    app = create_app(settings, clock=SimulatedClock(START + timedelta(minutes=5)), run_ticks=False)
    with TestClient(app) as client:
        assert client.get(f"/api/v1/events/{EVENT}/report").status_code == 401  # even with public_read
        token = make_user(app.state.db, Role.viewer)
        r = client.get(f"/api/v1/events/{EVENT}/report?format=csv", headers=auth(token))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == f'attachment; filename="report-{EVENT}.csv"'
        assert r.headers["x-report-status"] == "final" and r.text.splitlines()[0] == ",".join(HEADER)
        client.cookies.set("turnout_token", token)  # the dashboard's plain download link
        r = client.get(f"/api/v1/events/{EVENT}/report?format=html&download=false")
        assert r.status_code == 200 and r.headers["content-disposition"].startswith("inline")
        assert client.get("/api/v1/events/nope/report", headers=auth(token)).status_code == 404
        assert client.get(f"/api/v1/events/{EVENT}/report?format=docx", headers=auth(token)).status_code == 422
