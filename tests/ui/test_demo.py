"""`turnout demo`, time-compressed, reaches the overflow decision (checked through the API), with screenshots."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.notify_sink import sink
from tests.server.helpers import wait_until
from tests.ui.conftest import REPO, wait_live

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = REPO / "test-artifacts" / "demo"
PASSWORD = "demo-test-password"
__all__ = ["sink"]  # the fixture


def _wait_ready(proc: subprocess.Popen[str], lines: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if m := re.match(r"demo: ready (http://\S+)", line):
            return m.group(1).rstrip("/")
    raise AssertionError("demo did not become ready:\n" + "".join(lines[-40:]))


def test_demo_reaches_overflow_decision(shared: Path, browser, tmp_path: Path, sink) -> None:
    """...and its decision alert reaches an organizer's mailbox (local SMTP sink) and webhook within 5 s."""
    got, smtp_port, http_port = sink
    env = dict(os.environ, TURNOUT_DEMO_PASSWORD=PASSWORD, TURNOUT_DEMO_REGISTRATIONS="50000", PYTHONUNBUFFERED="1")
    env.setdefault("TURNOUT_MODEL_DIR", str(shared / "models"))
    mail = f"mailto://127.0.0.1:{smtp_port}?from=turnout@example.org&to=organizer@example.org&mode=insecure"
    cmd = [sys.executable, "-m", "turnout.cli", "demo", "--speed", "240", "--port", "0", "--duration", "170",
           "--notify", mail, "--notify", f"json://127.0.0.1:{http_port}/ok",
           "--report-dir", str(tmp_path / "report")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    try:
        url = _wait_ready(proc, lines, 90)
        token = httpx.post(f"{url}/api/v1/auth/login", json={"username": "operator", "password": PASSWORD}).json()[
            "token"
        ]
        headers = {"Authorization": f"Bearer {token}"}
        SHOTS.mkdir(parents=True, exist_ok=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.goto(f"{url}/login")
        page.fill("#username", "operator")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        wait_live(page, timeout=15)
        page.screenshot(path=str(SHOTS / "demo-start.png"), full_page=True)

        live: dict = {}
        middle_taken = False
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            live = httpx.get(f"{url}/api/v1/events/demo-rally/live", headers=headers, timeout=10).json()
            if not middle_taken and live["attendance"] > 300:
                page.screenshot(path=str(SHOTS / "demo-middle.png"), full_page=True)
                middle_taken = True
            if live["decision"]["state"] != "undecided":
                break
            time.sleep(0.5)
        seen_at = time.monotonic()  # at most 0.5 s (and one request) after the alert was raised
        state = live["decision"]["state"]
        assert state == "cancel_overflow", f"decision {state} after 150 s; last figures {live.get('forecast')}"
        figures = live["decision"]["figures"]
        assert figures.get("forecast_p95", figures.get("forecast_high")) < figures["target"]
        assert figures["minutes_to_start"] >= 60, figures
        wait_until(lambda: got.mails and got.hooks, 5, "the decision alert by mail and webhook")
        assert got.mails[0][0] - seen_at < 5 and got.hooks[0][0] - seen_at < 5
        assert "Overflow decision" in got.mails[0][1]["Subject"] and "Cancel the overflow" in got.hooks[0][2]["message"]
        page.wait_for_selector("#decision[data-state='cancel_overflow']", timeout=5_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "demo-decision.png"), full_page=True)
        context.close()

        cams = {c["id"]: c for c in live["cameras"]}
        assert len([c for c in cams if c.startswith("sim-")]) == 8
        assert "edge-cam1" in cams
        sim_seats = sum(s["seats"] for s in live["sections"] if s["id"].startswith("sim-"))
        assert sim_seats + sum(s["seats"] for s in live["sections"] if not s["id"].startswith("sim-")) == 19_000
        # the real edge reported at least once (model load included)
        deadline = time.monotonic() + 30
        while cams["edge-cam1"]["last_seen"] is None and time.monotonic() < deadline:
            time.sleep(1)
            live = httpx.get(f"{url}/api/v1/events/demo-rally/live", headers=headers, timeout=10).json()
            cams = {c["id"]: c for c in live["cameras"]}
        assert cams["edge-cam1"]["last_seen"] is not None, "the real edge never reported"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.append(out or "")
    log = "".join(lines)
    assert proc.returncode == 0, log[-3000:]
    assert "demo: stopped" in log
    # the demo's database is temporary: its report is written as it stops, in the three formats
    report = tmp_path / "report"
    pdf = subprocess.run(["pdftotext", str(report / "report-demo-rally.pdf"), "-"], capture_output=True, text=True)
    assert pdf.returncode == 0 and "Cancel the overflow event" in pdf.stdout, pdf.stderr or pdf.stdout[:500]
    html = (report / "report-demo-rally.html").read_text()
    assert "Cancel the overflow event" in html and "<script src" not in html
    rows = (report / "report-demo-rally.csv").read_text().splitlines()
    assert len(rows) > 10 and rows[0].count(",") >= 3, rows[:3]


def _descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid`` (pid -> command line), from /proc."""
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            for child in map(int, task.read_text().split()):
                out[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_demo_killed_with_sigkill_takes_its_edge_and_broker_with_it(shared: Path, tmp_path: Path) -> None:
    """kill -9 on the demo (no handler runs) must not leave its edge or its Mosquitto running: an orphaned
    edge keeps a camera open and publishing, an orphaned broker keeps the port."""
    env = dict(os.environ, TURNOUT_DEMO_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    env.setdefault("TURNOUT_MODEL_DIR", str(shared / "models"))
    cmd = [sys.executable, "-m", "turnout.cli", "demo", "--speed", "60", "--port", "0", "--duration", "600",
           "--report-dir", str(tmp_path / "report")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    children: dict[int, str] = {}
    try:
        _wait_ready(proc, lines, 90)
        children = _descendants(proc.pid)
        edge = [p for p, cmd in children.items() if "edge run" in cmd]
        broker = [p for p, cmd in children.items() if "mosquitto" in cmd]
        assert edge, children
        if "mosquitto" in "".join(lines):
            assert broker, children
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in children), 20, f"the demo's children to exit: {children}")
    finally:
        proc.kill()
        proc.wait(10)
        for pid in children:  # a failed run must not leave them behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
