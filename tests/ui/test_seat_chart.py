"""The dashboard's seating map drawn from the venue's chart (issue 12): chart import, 4 point pairs sent to the
edge's real command handler over the real broker, seat-level occupancy back, and the seats coloured on the
real page at 1440, 1024 and 390 px (layout, axe, screenshots in docs/screenshots/seatmap-*.png).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
import pytest

from tests.ui.conftest import ARTIFACTS, CAM1_SECTIONS, EDGE_CAMERA, REPO, LiveServer, api_token, login, wait_js
from tests.ui.test_layout import NO_HSCROLL, axe_problems
from turnout import contract

pytestmark = pytest.mark.browser

SHOTS = REPO / "docs" / "screenshots"
ROWS = "ABCDE"


def arena_chart() -> tuple[str, list[tuple[str, str, str]]]:
    """The UI venue as a chart: north (5 x 10) and south (3 x 10) behind the ends of a court, east (4 x 10) along
    its side; each section with its outline. Returns the JSON and the seats in chart order."""
    import json

    seats: list[tuple[str, str, str]] = []
    sections = []
    for sid, rows, place in (("north", 5, "n"), ("south", 3, "s"), ("east", 4, "e")):
        out_rows = []
        for r in range(rows):
            row = []
            for k in range(10):
                if place == "n":
                    x, y = k - 4.5, -10.0 - r
                elif place == "s":
                    x, y = k - 4.5, 10.0 + r
                else:
                    x, y = 12.0 + r, 4.5 - k
                row.append({"seat": k + 1, "x": x, "y": y})
                seats.append((sid, ROWS[r], str(k + 1)))
            out_rows.append({"row": ROWS[r], "seats": row})
        xs = [s["x"] for row in out_rows for s in row["seats"]]
        ys = [s["y"] for row in out_rows for s in row["seats"]]
        box = [[min(xs) - 0.7, min(ys) - 0.7], [max(xs) + 0.7, min(ys) - 0.7], [max(xs) + 0.7, max(ys) + 0.7],
               [min(xs) - 0.7, max(ys) + 0.7]]
        sections.append({"id": sid, "polygon": box, "rows": out_rows})
    return json.dumps({"sections": sections}), seats


# cam1 (480x360) looks along the court: north far (small, top), south near (large, bottom); east is out of view
PAIRS = [
    {"plan": [-6.0, -16.0], "image": [80.0, 10.0]},
    {"plan": [6.0, -16.0], "image": [400.0, 10.0]},
    {"plan": [6.0, 14.0], "image": [470.0, 350.0]},
    {"plan": [-6.0, 14.0], "image": [10.0, 350.0]},
]
TAKEN = {"north": ["A-1", "A-2", "A-3", "B-5", "E-10"], "south": ["A-1", "C-7"]}


class EdgeCommands:
    """The edge side of cam1 for layouts: the real Publisher and CommandHandler on a 480x360 frame."""

    def __init__(self, server: LiveServer, state_dir: Any) -> None:
        from edge.commands import CommandHandler
        from edge.config import CameraConfig, MqttConfig
        from edge.detections import Detections
        from edge.publisher import Publisher

        self.camera = CameraConfig(id=EDGE_CAMERA, source="vtest.avi", sections=CAM1_SECTIONS)
        self.applied = threading.Event()
        self.publisher = Publisher(MqttConfig(url=server.broker.url), venue=server.venue, camera=EDGE_CAMERA,
                                   state_dir=state_dir)
        frame = np.zeros((360, 480, 3), np.uint8)
        self.handler = CommandHandler(self.publisher, server.venue, EDGE_CAMERA, latest=lambda: (frame, Detections.empty()),
                                      current_layout=lambda: self.camera, apply_layout=self._apply)

    def _apply(self, cfg: Any) -> None:
        self.camera = cfg
        self.applied.set()


def publish_taken(server: LiveServer) -> None:
    """What cam1 sends once it counts with the projected seats: per section, which seats are taken."""
    msg = contract.Occupancy(
        venue=server.venue, camera=EDGE_CAMERA, seq=server.next_seq(EDGE_CAMERA), ts=contract.utcnow(),
        sections=[contract.SectionCount(id=s, seats=n, occupied=len(TAKEN[s]), people=len(TAKEN[s]), taken=TAKEN[s])
                  for s, n in (("north", 50), ("south", 30))],
        model="yolo11n", processing=contract.Processing(fps=2.0, latency_ms=80.0, frames=server.seq[EDGE_CAMERA]),
    )
    server.publish(contract.occupancy_topic(server.venue, EDGE_CAMERA), msg.to_json())


PIXEL = """([i, dpr]) => {
  const [x, y] = TurnoutSeatChart.seatAt(i);
  const d = document.getElementById('chartmap').getContext('2d').getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data;
  return '#' + [d[0], d[1], d[2]].map((v) => v.toString(16).padStart(2, '0')).join('');
}"""


def import_chart(server: LiveServer) -> list[tuple[str, str, str]]:
    chart, seats = arena_chart()
    admin = {"Authorization": f"Bearer {api_token(server, 'chief')}"}
    r = httpx.put(f"{server.url}/api/v1/venues/{server.venue}/chart", content=chart,
                  headers={**admin, "Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200 and r.json()["seats"] == 120, r.text
    return seats


def test_seating_map_is_drawn_from_the_chart_seat_by_seat(browser: Any, live_server: LiveServer, tmp_path: Any) -> None:
    seats = import_chart(live_server)
    base = live_server.url
    edge = EdgeCommands(live_server, tmp_path)
    edge.publisher.start()
    edge.handler.attach()
    try:
        assert edge.publisher._connected.wait(10)
        ops = {"Authorization": f"Bearer {api_token(live_server)}"}
        r = httpx.put(f"{base}/api/v1/calibration/{live_server.venue}/{EDGE_CAMERA}/seatmap",
                      json={"frame": [480, 360], "pairs": PAIRS}, headers=ops, timeout=20)
        out = r.json()
        assert r.status_code == 200 and out["ok"], r.text
        assert out["sections"] == {"north": 50, "south": 30} and out["unseen_by_reason"] == {"outside": 40}
        assert edge.applied.is_set() and [len(s.seat_map) for s in edge.camera.sections] == [50, 30]
        publish_taken(live_server)
        index = {s: i for i, s in enumerate(seats)}
        occupied = [index[(sid, *t.split("-"))] for sid, ids in TAKEN.items() for t in ids]
        empty = [index[("north", "C", "4")], index[("south", "B", "9")]]
        unseen = [index[("east", "A", "1")], index[("east", "D", "10")]]
        for width in (1440, 1024, 390):
            publish_taken(live_server)  # the camera keeps reporting (seats of a silent camera read "unseen")
            phone = width < 600
            ctx = browser.new_context(viewport={"width": width, "height": 844 if phone else 900},
                                      device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            try:
                login(page, live_server)
                wait_js(page, "() => window.TurnoutSeatChart && TurnoutSeatChart.state().occupied === 7", timeout=15,
                        what="seat states on the chart")
                st = page.evaluate("TurnoutSeatChart.state()")
                assert (st["occupied"], st["empty"], st["unseen"]) == (7, 73, 40)
                assert page.is_visible("#chartmap") and page.is_hidden("#seatmap")
                dpr = page.evaluate("window.devicePixelRatio")
                colors = page.evaluate("TurnoutSeatChart.colors")
                for i in occupied:
                    assert page.evaluate(PIXEL, [i, dpr]) == colors["o"], (width, seats[i])
                for i in empty:
                    assert page.evaluate(PIXEL, [i, dpr]) == colors["e"], (width, seats[i])
                for i in unseen:
                    assert page.evaluate(PIXEL, [i, dpr]) == colors["u"], (width, seats[i])
                label = page.get_attribute("#chartmap", "aria-label") or ""
                assert "120 seats: 7 occupied, 73 empty, 40 not seen" in label
                assert page.text_content("#chart-occupied") == "7" and page.text_content("#chart-unseen") == "40"
                assert page.evaluate(NO_HSCROLL), f"horizontal scroll at {width}"
                box = page.evaluate("(() => { const r = document.getElementById('chartmap').getBoundingClientRect();"
                                    " const p = document.getElementById('map-panel').getBoundingClientRect();"
                                    " return [r.left - p.left, p.right - r.right, r.width]; })()")
                assert box[0] >= 0 and box[1] >= 0 and box[2] > 200, box  # inside its panel, not a sliver
                assert axe_problems(page, include=["#map-panel"]) == []
                page.locator("#map-panel").scroll_into_view_if_needed()
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.locator("#map-panel").screenshot(path=str(SHOTS / f"seatmap-{width}.png"))
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"seatmap-page-{width}.png"), full_page=True)
            finally:
                ctx.close()
            assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        live_server.publish(contract.layout_topic(live_server.venue, EDGE_CAMERA), b"", retain=True)
        edge.publisher.stop(flush_s=1)


CLICKS = [("north", "E", "1", -4.5, -14.0), ("north", "E", "10", 4.5, -14.0),
          ("south", "C", "10", 4.5, 12.0), ("south", "C", "1", -4.5, 12.0)]


def test_calibration_view_picks_4_point_pairs_and_the_edge_gets_the_seats(
    page: Any, live_server: LiveServer, tmp_path: Any
) -> None:
    from server.seatmap.project import PointPairs, apply, fit_homography

    import_chart(live_server)
    truth = fit_homography(PointPairs.of([(p["plan"], p["image"]) for p in PAIRS]), 480, 360)
    edge = EdgeCommands(live_server, tmp_path)
    edge.publisher.start()
    edge.handler.attach()
    try:
        assert edge.publisher._connected.wait(10)
        login(page, live_server, path="/calibration")
        page.wait_for_selector(f"#camera-select option[value='{live_server.venue}/{EDGE_CAMERA}']", state="attached")
        page.select_option("#camera-select", f"{live_server.venue}/{EDGE_CAMERA}")
        page.click("#snapshot-btn")
        page.wait_for_selector("#pairs-panel:not([hidden])", timeout=15_000)
        wait_js(page, "() => window.TurnoutPairs && TurnoutPairs.view()", what="plan drawn")
        for sid, row, seat, x, y in CLICKS:
            page.locator("#plan").scroll_into_view_if_needed()
            view = page.evaluate("TurnoutPairs.view()")
            plan = page.locator("#plan").bounding_box()
            page.mouse.click(plan["x"] + view["ox"] + x * view["scale"], plan["y"] + view["oy"] + y * view["scale"])
            assert page.evaluate("TurnoutPairs.pending().label") == f"{sid} {row}-{seat}"
            u, v = apply(truth, np.array([x, y]))
            page.locator("#snapshot").scroll_into_view_if_needed()
            img = page.locator("#snapshot").bounding_box()
            page.mouse.click(img["x"] + u * img["width"] / 480, img["y"] + v * img["height"] / 360)
        picked = page.evaluate("TurnoutPairs.pairs()")
        assert [p["label"] for p in picked] == [f"{a} {b}-{c}" for a, b, c, _, _ in CLICKS]
        assert page.is_enabled("#pairs-send")
        page.click("#pairs-send")
        page.wait_for_selector("#pairs-status:has-text('Applied by the edge: 80 seats seen, unseen: 40 outside')",
                               timeout=15_000)
        assert edge.applied.is_set() and [len(s.seat_map) for s in edge.camera.sections] == [50, 30]
        north = edge.camera.sections[0]
        a1 = next(s for s in north.seat_map if s.id == "A-1")
        centre = np.mean(np.array(a1.polygon), axis=0)
        assert np.hypot(*(centre - apply(truth, np.array([-4.5, -10.0])))) < 3.0  # clicks in screen pixels: ~1 px off
        page.wait_for_selector("#snap-status:has-text('received')", timeout=15_000)
        assert axe_problems(page, include=["#pairs-panel"]) == []
        assert page.evaluate(NO_HSCROLL)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "calibration-pairs-1440.png"), full_page=True)
    finally:
        live_server.publish(contract.layout_topic(live_server.venue, EDGE_CAMERA), b"", retain=True)
        edge.publisher.stop(flush_s=1)
