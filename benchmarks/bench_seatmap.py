"""A 10,500-seat arena bowl on the real server and dashboard: chart import through the API, then the seat map.

A bowl of 20 sections x 25 rows x 21 seats is imported with ``PUT /api/v1/venues/{venue}/chart`` (its time is
printed: HTTP, parsing, checks, bulk insert). One camera is then given the seats of sections 101-106 as its
seat map, with 60 % of them taken (set in-process, as its occupancy messages would; no edge or broker needed),
and Debian's Chromium shows the dashboard at 1440 and 390 px: the states counted by the page, the time to
redraw the 10,500 seats, and screenshots of the map (docs/screenshots/seatmap-arena-*.png).

    .venv/bin/python benchmarks/bench_seatmap.py [--shots docs/screenshots]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS, ROWS, SEATS = 20, 25, 21
LIVE = [str(101 + s) for s in range(6)]
PASSWORD = "bench-seatmap-pw"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=Path, default=None, help="Write seatmap-arena-{width}.png here.")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from server.app import create_app
    from server.auth import Role, create_token, create_user
    from server.db.models import CameraSeatMap, utcnow
    from server.db.session import Database
    from server.live.state import Reading
    from server.migrations import upgrade
    from server.sample_data import bowl_chart_csv
    from server.seatmap.store import load_chart
    from server.settings import load_settings
    from server.venues import load_file
    from turnout.demo import ServerThread

    tmp = Path(tempfile.mkdtemp(prefix="bench-seatmap-"))
    venue, now = "bowl", datetime.now(UTC).replace(microsecond=0)
    sections = [{"id": str(101 + s), "seats": ROWS * SEATS, "cameras": ["cam1"]} for s in range(SECTIONS)]
    spec = {
        "venues": [{"id": venue, "name": "Bowl arena", "cameras": [{"id": "cam1"}], "sections": sections}],
        "events": [{"id": "night", "venue": venue, "name": "Arena night", "capacity": SECTIONS * ROWS * SEATS,
                    "doors_open": (now - timedelta(minutes=30)).isoformat(),
                    "start": (now + timedelta(minutes=90)).isoformat()}],
    }
    (tmp / "venue.yaml").write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp / 'turnout.db'}"
    db = Database(url)
    upgrade(db)
    with db.session() as s:
        load_file(s, tmp / "venue.yaml")
    with db.session() as s:
        create_user(s, "chief", Role.admin, PASSWORD)
        token = create_token(s, "chief")
    db.dispose()
    app = create_app(load_settings(None, database_url=url, mqtt_enabled=False, public_read=False, tick_s=0.5))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ServerThread(app, port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        r = httpx.put(f"{base}/api/v1/venues/{venue}/chart", content=bowl_chart_csv(SECTIONS, ROWS, SEATS), timeout=120,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
        r.raise_for_status()
        print(f"chart of {r.json()['seats']:,} seats imported through the API in {time.perf_counter() - started:.2f} s")
        with app.state.db.session() as s:
            chart = load_chart(s, venue)
            assert chart is not None
            seen = [c.label for c in chart.seats if c.section in LIVE]
            s.add(CameraSeatMap(venue_id=venue, camera_id="cam1", pairs={}, homography={}, frame_w=1920,
                                frame_h=1080, min_seat_px=12, seen=seen, unseen=0, updated_at=utcnow()))
            s.commit()
        rng = np.random.default_rng(1)
        hub = app.state.hub
        with hub._lock:
            v = hub.venues[venue]
            t = hub.clock.now()
            v.cameras["cam1"].last_seen = t
            for sid in LIVE:
                taken = frozenset(f"{c.row}-{c.seat}" for c in chart.seats if c.section == sid and rng.random() < 0.6)
                v.readings[(sid, "cam1")] = Reading(len(taken), len(taken), ROWS * SEATS, t, t, taken)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            for width in (1440, 390):
                ctx = browser.new_context(viewport={"width": width, "height": 900},
                                          device_scale_factor=2 if width < 600 else 1)
                page = ctx.new_page()
                page.goto(f"{base}/login")
                page.fill("#username", "chief")
                page.fill("#password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_url(lambda u: "/login" not in u)
                st: dict = {}
                for _ in range(200):
                    st = page.evaluate("window.TurnoutSeatChart ? TurnoutSeatChart.state() : {}")
                    if st.get("occupied"):
                        break
                    time.sleep(0.1)
                ms = page.evaluate(
                    "(() => { const t = performance.now(); window.dispatchEvent(new Event('resize'));"
                    " return performance.now() - t; })()"
                )
                print(f"{width} px: occupied {st['occupied']:,}, empty {st['empty']:,}, unseen {st['unseen']:,}; "
                      f"redraw of {len(chart.seats):,} seats {ms:.0f} ms")
                if args.shots:
                    page.locator("#map-panel").screenshot(path=str(args.shots / f"seatmap-arena-{width}.png"))
                ctx.close()
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
