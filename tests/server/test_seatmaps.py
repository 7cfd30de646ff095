"""Seat maps (issue 12): chart import at arena scale, bad charts, homography projection and its refusals,
and the projected seats reaching a real edge worker over the real broker, back as seat-level occupancy.

Real data: ``cinema_seatmap/`` (41 seats labelled on a 1920x1080 view of a real cinema camera).
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import Point, Polygon, box

from server.app import create_app
from server.auth import Role
from server.clock import SimulatedClock
from server.db.session import Database
from server.migrations import upgrade
from server.sample_data import bowl_chart_csv
from server.seatmap.chart import ChartError, parse_chart
from server.seatmap.project import PointPairs, ProjectionError, apply, fit_homography, layout_sections, project_seats
from server.seatmap.store import import_chart, load_chart
from server.venues import SectionIn, VenueIn
from tests.conftest import Broker
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import auth, make_user, setup_venue, wait_until

CINEMA = "cinema_seatmap"
ROWS_Y = {"E": 0.0, "D": 1.0, "C": 2.0, "B": 3.0, "A": 4.0}  # plan: row A nearest the camera, y grows down
PITCH = 0.6
W, H = 1920, 1080


# ----------------------------------------------------------------------------------------- helpers
def cinema_boxes(shared: Path) -> dict[str, tuple[float, float, float, float]]:
    """The repo's 41 seat boxes (YOLO, normalised) as ``{"A-1": (cx, cy, w, h)}`` in 1920x1080 pixels.

    Rows by height in the image (A nearest the camera), seats numbered left to right."""
    boxes = np.loadtxt(shared / "data" / CINEMA / "seat_boxes_yolo_41seats_1920x1080view.txt")[:, 1:]
    rows: dict[str, list[tuple[float, ...]]] = {r: [] for r in ROWS_Y}
    for cx, cy, w, h in boxes:
        row = "A" if cy > 0.55 else "B" if cy > 0.4 else "C" if cy > 0.25 else "D" if cy > 0.155 and cx < 0.52 else "E"
        rows[row].append((cx * W, cy * H, w * W, h * H))
    out = {}
    for row, items in rows.items():
        for i, seat_box in enumerate(sorted(items)):
            out[f"{row}-{i + 1}"] = seat_box  # type: ignore[assignment]
    return out


def cinema_chart_csv() -> bytes:
    """The cinema's plan as a venue chart would give it: rows A-D of 8 seats, E of 9, a regular grid."""
    lines = ["section,row,seat,x,y"]
    for row, y in ROWS_Y.items():
        n, off = (9, -PITCH / 2) if row == "E" else (8, 0.0)
        lines += [f"hall,{row},{s},{off + (s - 1) * PITCH:.2f},{y}" for s in range(1, n + 1)]
    return ("\n".join(lines) + "\n").encode()


CLICKED = ("A-1", "A-8", "D-8", "D-1")  # the 4 seats an operator clicks: the corners of rows A-D


def cinema_pairs(boxes: dict[str, tuple[float, ...]]) -> list[dict[str, list[float]]]:
    return [
        {"plan": [(int(k.split("-")[1]) - 1) * PITCH, ROWS_Y[k[0]]], "image": [round(boxes[k][0]), round(boxes[k][1])]}
        for k in CLICKED
    ]


def _db(target: DbTarget) -> Database:
    db = Database(target.url, target.schema)
    upgrade(db)
    return db


# ------------------------------------------------------------------------------------------- import
def test_a_10500_seat_chart_imports_in_seconds_and_replaces_the_last(db_target: DbTarget) -> None:
    db = _db(db_target)
    setup_venue(db, VenueIn(id="arena", name="Arena"), None)
    data = bowl_chart_csv()
    try:
        with db.session() as s:
            started = time.perf_counter()
            summary = import_chart(s, "arena", data, source_name="bowl.csv")
            took = time.perf_counter() - started
        print(f"\n{db_target.kind}: 10,500-seat chart parsed, checked and stored in {took:.2f} s")
        assert took < 5.0
        assert summary["seats"] == 10_500 and len(summary["sections"]) == 20 and summary["sections"]["101"] == 525
        with db.session() as s:
            chart = load_chart(s, "arena")
        assert chart is not None and len(chart.seats) == 10_500
        first, last = chart.seats[0], chart.seats[-1]
        assert (first.section, first.row, first.seat) == ("101", "R1", "1") and first.x == pytest.approx(60 * math.cos(0.1), abs=1e-3)
        assert (last.section, last.row, last.seat) == ("120", "R25", "21")
        with db.session() as s:  # a new import replaces the old chart entirely
            import_chart(s, "arena", cinema_chart_csv(), source_name="cinema.csv")
        with db.session() as s:
            again = load_chart(s, "arena")
        assert again is not None and len(again.seats) == 41 and {x.section for x in again.seats} == {"hall"}
    finally:
        db.dispose()


def test_common_export_shapes_read_the_same() -> None:
    seats = [("101", "A", "1", 0.0, 0.0), ("101", "A", "2", 1.0, 0.0), ("102", "B", "1", 5.0, 2.5)]
    csv_ = "Section,Row,Seat,X,Y\n" + "".join(f"{a},{b},{c},{x},{y}\n" for a, b, c, x, y in seats)
    flat = [{"section": a, "row": b, "seat": c, "x": x, "y": y} for a, b, c, x, y in seats]
    wrapped = {"seats": [{"sec": a, "row_label": b, "seat_number": int(c), "position": {"x": x, "y": y}}
                         for a, b, c, x, y in seats]}
    nested = {"sections": [
        {"id": "101", "polygon": [[-1, -1], [2, -1], [2, 1], [-1, 1]],
         "rows": [{"row": "A", "seats": [{"seat": 1, "x": 0, "y": 0}, {"number": "2", "pos": [1, 0]}]}]},
        {"name": "102", "seats": [{"row": "B", "seat": "1", "x": 5, "y": 2.5}]},
    ]}
    want = sorted(seats)
    for data in (csv_, json.dumps(flat), json.dumps(wrapped), json.dumps(nested)):
        chart = parse_chart(data.encode())
        assert sorted((s.section, s.row, s.seat, s.x, s.y) for s in chart.seats) == want
    y_up = parse_chart(json.dumps({"y_axis": "up", "seats": flat}).encode())
    assert [s.y for s in y_up.seats] == [0.0, 0.0, -2.5]


def test_bad_charts_name_the_seat_and_change_nothing(sqlite_target: DbTarget) -> None:
    db = _db(sqlite_target)
    setup_venue(db, VenueIn(id="arena", name="Arena"), None)
    good = cinema_chart_csv()
    dup = good + b"hall,C,5,9.0,9.0\n"  # line 43: C 5 again (first at line 23)
    nested = {"sections": [{"id": "101", "polygon": [[0, 0], [10, 0], [10, 5], [0, 5]],
                            "rows": [{"row": "A", "seats": [{"seat": 1, "x": 1, "y": 1}]},
                                     {"row": "B", "seats": [{"seat": 1, "x": 2, "y": 2}, {"seat": 2, "x": 12, "y": 2}]}]}]}
    cases = [
        (dup, ["line 43", "hall/C/5 appears twice", "first at line 23"]),
        (json.dumps(nested).encode(), ["sections[0].rows[1].seats[1]", "101/B/2 at (12, 2)", "outside section 101"]),
        (b"section,row,seat,x,y\nhall,A,1,0,zero\n", ["line 2", "seat 1", "y 'zero' is not a number"]),
        (b"section,row,seat,x,y\nSec 101,A,1,0,0\n", ["line 2", "'Sec 101' is not an id"]),
        (b"section,row,x,y\nhall,A,0,0\n", ["lacks the column(s) ['seat']"]),
    ]
    try:
        with db.session() as s:
            import_chart(s, "arena", good, source_name="good.csv")
        for data, words in cases:
            with db.session() as s, pytest.raises(ChartError) as err:
                import_chart(s, "arena", data, source_name="bad")
            for w in words:
                assert w in str(err.value), (w, str(err.value))
            with db.session() as s:
                chart = load_chart(s, "arena")
            assert chart is not None and len(chart.seats) == 41  # the previous chart is untouched
    finally:
        db.dispose()


def test_chart_api_needs_admin_and_refuses_bad_charts(sqlite_target: DbTarget, clock: SimulatedClock) -> None:
    app = create_app(make_settings(sqlite_target, public_read=False), clock=clock, run_ticks=False)
    with TestClient(app) as client:
        setup_venue(app.state.db, VenueIn(id="arena", name="Arena"), None)
        admin, operator = make_user(app.state.db, Role.admin), make_user(app.state.db, Role.operator)
        url = "/api/v1/venues/arena/chart"
        csv_ = {"Content-Type": "text/csv"}
        assert client.put(url, content=cinema_chart_csv(), headers=csv_).status_code == 401
        assert client.put(url, content=cinema_chart_csv(), headers={**csv_, **auth(operator)}).status_code == 403
        r = client.put(url + "?name=cinema.csv", content=cinema_chart_csv(), headers={**csv_, **auth(admin)})
        assert r.status_code == 200 and r.json()["seats"] == 41 and r.json()["source_name"] == "cinema.csv"
        assert r.json()["unknown_sections"] == ["hall"]  # the venue has no section "hall" yet
        bad = cinema_chart_csv() + b"hall,A,1,3,3\n"
        r = client.put(url, content=bad, headers={**csv_, **auth(admin)})
        assert r.status_code == 422 and "hall/A/1 appears twice" in r.json()["detail"][0]["msg"]
        assert client.get(url, headers=auth(operator)).json()["seats"] == 41
        seats = client.get(url + "/seats", headers=auth(operator)).json()
        assert seats["sections"] == ["hall"] and len(seats["x"]) == 41 and seats["row"][0] == "E"
        assert client.get("/api/v1/venues/nowhere/chart", headers=auth(operator)).status_code == 404
        # a dry run projects without an edge; a real one needs MQTT (off here): 503 and nothing stored
        setup_venue(app.state.db, VenueIn(id="arena", name="Arena", cameras=[{"id": "cam1"}],
                                          sections=[SectionIn(id="hall", seats=41, cameras=["cam1"])]), None)
        app.state.hub.reload()
        assert client.get(url, headers=auth(operator)).json()["unknown_sections"] == []
        pairs = [{"plan": [0, 4], "image": [431, 634]}, {"plan": [4.2, 4], "image": [938, 664]},
                 {"plan": [4.2, 1], "image": [977, 176]}, {"plan": [0, 1], "image": [557, 233]}]
        url = "/api/v1/calibration/arena/cam1/seatmap"
        r = client.put(url, json={"frame": [W, H], "pairs": pairs, "dry_run": True}, headers=auth(operator))
        assert r.status_code == 200 and r.json()["seen"] == 41 and r.json()["request_id"] is None
        assert sum(len(s["seat_map"]) for s in r.json()["layout"]["sections"]) == 41
        assert client.put(url, json={"frame": [W, H], "pairs": pairs}, headers=auth(operator)).status_code == 503
        other = url.replace("cam1", "cam9")
        r = client.put(other, json={"frame": [W, H], "pairs": pairs, "dry_run": True}, headers=auth(operator))
        assert r.status_code == 404 and "cam9 is not a camera of venue 'arena'" in r.json()["detail"]
        assert client.get(url, headers=auth(operator)).status_code == 404


def test_piecewise_sections_and_hidden_areas() -> None:
    """A section with its own pairs uses its own homography; seats under a hide area are unseen, not guessed."""
    lines = ["section,row,seat,x,y"]
    lines += [f"low,R{r},{k},{k * 1.0},{r * 1.0}" for r in range(4) for k in range(1, 11)]
    lines += [f"high,R{r},{k},{k * 1.0},{20 + r * 1.0}" for r in range(4) for k in range(1, 11)]
    chart = parse_chart(("\n".join(lines) + "\n").encode())
    h_low = np.array([[40.0, 0.0, 100.0], [0.0, 40.0, 100.0], [0.0, 0.0, 1.0]])
    h_high = np.array([[30.0, 5.0, 200.0], [-2.0, 25.0, -100.0], [0.0, 0.001, 1.0]])  # another plane
    low_pts = np.array([[1.0, 0.0], [10.0, 0.0], [10.0, 3.0], [1.0, 3.0]])
    high_pts = low_pts + np.array([0.0, 20.0])
    homographies = {
        None: fit_homography(PointPairs(low_pts, apply(h_low, low_pts)), W, H),
        "high": fit_homography(PointPairs(high_pts, apply(h_high, high_pts)), W, H, what="sections.high"),
    }
    hide = [[(100.0, 80.0), (270.0, 80.0), (270.0, 120.0), (100.0, 120.0)]]  # row R0 seats 1-4 of "low"
    proj = project_seats(chart, homographies, W, H, min_seat_px=12, hide=hide)
    xy = chart.xy()
    for i in proj.seen:
        truth = h_high if chart.seats[i].section == "high" else h_low
        assert np.hypot(*(np.mean(proj.polygons[i], axis=0) - apply(truth, xy[i]))) < 1.0
    hidden = {chart.seats[i].label for i in set(range(len(xy))) - set(proj.seen)}
    assert hidden == {f"low/R0/{k}" for k in range(1, 5)} and proj.unseen == {"hidden": 4}
    only_high = project_seats(chart, {"high": homographies["high"]}, W, H, min_seat_px=12)
    assert only_high.unseen == {"unmapped": 40} and len(only_high.seen) == 40


# --------------------------------------------------------------------------------------- projection
H_TRUE = np.array([[42.0, -6.0, 700.0], [3.0, 18.0, 300.0], [0.0004, 0.02, 1.0]])


def test_projection_follows_a_known_homography() -> None:
    """Pairs made with a known perspective: the fit recovers it and every seat lands where it maps."""
    lines = ["section,row,seat,x,y"]
    for r in range(30):  # rows recede from the camera: far ones get small, the farthest leave the frame
        lines += [f"s1,R{r},{k + 21},{k * 1.0:.1f},{r * 1.5:.1f}" for k in range(-20, 21)]
    chart = parse_chart(("\n".join(lines) + "\n").encode())
    corners = np.array([[-10.0, 0.0], [10.0, 0.0], [10.0, 12.0], [-10.0, 12.0]])
    pairs = PointPairs(corners, apply(H_TRUE, corners))
    fitted = fit_homography(pairs, W, H)
    assert np.allclose(fitted / fitted[2, 2], H_TRUE / H_TRUE[2, 2], rtol=1e-4, atol=1e-8)
    proj = project_seats(chart, {None: fitted}, W, H, min_seat_px=12)
    xy = chart.xy()
    clipped = 0
    for i in proj.seen:
        poly = proj.polygons[i]
        expected = apply(H_TRUE, xy[i])
        if len(poly) == 4 and all(0 < u < W and 0 < v < H for u, v in poly):
            corners_true = apply(H_TRUE, np.array(poly_plan(xy[i], chart, i)))
            assert np.allclose(poly, corners_true, atol=0.02)  # every corner where the true mapping puts it
        else:  # cut at the frame edge: what is left still holds the seat's centre
            clipped += 1
            assert Polygon(poly).buffer(0.5).contains(Point(*expected))
        assert 0 <= expected[0] <= W and 0 <= expected[1] <= H
    assert clipped > 0
    seen = set(proj.seen)
    frame = box(0, 0, W, H)
    for i in set(range(len(xy))) - seen:  # unseen only for a reason: (mostly) out of the frame, or too small
        quad = Polygon(apply(H_TRUE, np.array(poly_plan(xy[i], chart, i))))
        part = quad.intersection(frame).area
        assert part < 0.5 * quad.area or math.sqrt(part) < 12
    assert proj.unseen["outside"] > 100 and proj.unseen["too_small"] > 0 and len(seen) > 800
    small = project_seats(chart, {None: fitted}, W, H, min_seat_px=20)  # a larger minimum drops the far rows
    dropped = seen - set(small.seen)
    assert set(small.seen) < seen and small.unseen["too_small"] >= proj.unseen["too_small"] + len(dropped)
    assert all(math.sqrt(_area(proj.polygons[i])) < 20 for i in dropped)
    assert all(math.sqrt(_area(small.polygons[i])) >= 20 for i in small.seen)


def poly_plan(centre: np.ndarray, chart: Any, i: int) -> list[list[float]]:
    """The seat's footprint on the plan: this chart's rows run along x, 1.0 apart, rows 1.5 apart."""
    from server.seatmap.project import FOOTPRINT

    dx, dy = FOOTPRINT * 1.0 / 2, FOOTPRINT * 1.5 / 2
    x, y = centre
    return [[x - dx, y - dy], [x + dx, y - dy], [x + dx, y + dy], [x - dx, y + dy]]


def _area(poly: list[tuple[float, float]]) -> float:
    x, y = np.array(poly).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def test_bad_point_pairs_are_refused_with_the_reason() -> None:
    plan = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]])
    image = apply(H_TRUE, plan)
    with pytest.raises(ProjectionError, match=r"at least 4 point pairs.*got 3"):
        fit_homography(PointPairs(plan[:3], image[:3]), W, H)
    mirrored = image[[1, 0, 3, 2]]  # left and right swapped: the plan would be seen in a mirror
    with pytest.raises(ProjectionError, match=r"folds the image.*negative determinant"):
        fit_homography(PointPairs(plan, mirrored), W, H)
    bow_tie = image[[0, 1, 3, 2]]  # two image points swapped: the plane folds over between the clicks
    with pytest.raises(ProjectionError, match="folds the image"):
        fit_homography(PointPairs(plan, bow_tie), W, H)
    with pytest.raises(ProjectionError, match=r"pairs\[2\]: image point .* outside the 1920x1080 frame"):
        fit_homography(PointPairs(plan, image + np.array([[0, 0], [0, 0], [0, 2000], [0, 0]])), W, H)
    line = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    with pytest.raises(ProjectionError, match="lie on one line"):
        fit_homography(PointPairs(line, apply(H_TRUE, line)), W, H)
    more = np.vstack([plan, [[5.0, 2.5], [2.0, 4.0]]])
    wrong = apply(H_TRUE, more)
    wrong[5] += [120.0, 0.0]  # one click on the wrong seat
    with pytest.raises(ProjectionError, match=r"pairs\[5\]: \d+ px off"):
        fit_homography(PointPairs(more, wrong), W, H)


def test_cinema_seats_from_4_clicked_points_match_the_repo_boxes(shared: Path) -> None:
    """The real 41-seat cinema view: 4 clicked seats project the other 37 close to the labelled boxes."""
    from edge.config import CameraConfig
    from edge.zones import Layout

    boxes = cinema_boxes(shared)
    assert len(boxes) == 41
    chart = parse_chart(cinema_chart_csv())
    pairs = cinema_pairs(boxes)
    Hm = fit_homography(PointPairs.of([(p["plan"], p["image"]) for p in pairs]), W, H)
    proj = project_seats(chart, {None: Hm}, W, H, min_seat_px=12)
    assert len(proj.seen) == 41
    inside, errors = 0, []
    for i in proj.seen:
        cx, cy, bw, bh = boxes[chart.seats[i].layout_id]
        u, v = np.mean(proj.polygons[i], axis=0)
        errors.append(math.hypot(u - cx, v - cy) / bw)
        inside += abs(u - cx) <= bw / 2 and abs(v - cy) <= bh / 2
    print(f"\ncinema: {inside}/41 projected seat centres inside the repo's boxes, "
          f"median error {np.median(errors):.2f} box widths")
    assert inside >= 36 and np.median(errors) < 0.3  # E5-E9 sit on a step the regular-grid plan does not show
    cam = CameraConfig.model_validate(
        {"id": "cam1", "source": "x.mp4", "anchor": "center", "sections": layout_sections(chart, proj)}
    )
    zones = Layout(cam, W, H)  # the edge accepts it as is
    from edge.detections import Detections

    people = [boxes[k] for k in ("D-5", "D-6", "E-2", "E-3")]  # the seats marked occupied in the repo overlay
    xyxy = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h in people], np.float32)
    tally = zones.count(Detections(xyxy, np.full(len(xyxy), 0.9, np.float32)))
    assert tally["hall"].seats_taken == {"D-5", "D-6", "E-2", "E-3"}


# ------------------------------------------------------------------------------------ real edge, e2e
class ScriptedDetector:
    """Stands in for the model only: returns the given person boxes (the repo's occupied seats)."""

    name = "scripted"

    def __init__(self, xyxy: np.ndarray) -> None:
        self.xyxy = xyxy
        self.last_timing: dict[str, float] = {"tiles": 1}

    def detect(self, image: np.ndarray, cfg: Any, **_: Any) -> Any:
        from edge.detections import Detections

        return Detections(self.xyxy.copy(), np.full(len(self.xyxy), 0.9, np.float32))


def test_projected_seats_reach_a_real_edge_and_come_back_seat_by_seat(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock, shared: Path, tmp_path: Path
) -> None:
    import cv2

    from edge.config import parse_config
    from edge.pipeline import _STOP, CameraWorker
    from edge.sources import Frame

    app = create_app(make_settings(sqlite_target, system_broker, [venue_id]), clock=clock, run_ticks=False)
    venue = VenueIn(id=venue_id, name="Cinema", cameras=[{"id": "cam1"}],
                    sections=[SectionIn(id="hall", seats=41, cameras=["cam1"])])
    boxes = cinema_boxes(shared)
    frame = cv2.imread(str(shared / "data" / CINEMA / "cinema_cam01_1920x1080_with_repo_seat_overlay.png"))
    people = [boxes[k] for k in ("D-5", "D-6", "E-2", "E-3")]
    xyxy = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h in people], np.float32)
    cfg = parse_config({
        "venue": venue_id, "state_dir": str(tmp_path / "state"),
        "mqtt": {"url": system_broker.url, "interval_s": 0.2},
        "model": {"path": str(shared / "models/yolo11n-recon.onnx")},
        "cameras": [{"id": "cam1", "source": "unused.mp4", "anchor": "center",
                     "hysteresis": {"window": 1, "seat_on": 1, "seat_off": 1},
                     "sections": [{"id": "hall", "seats": 41, "polygon": [[0, 0], [1920, 0], [1920, 1080], [0, 1080]]}]}],
    })
    stop = threading.Event()
    worker = CameraWorker(cfg, cfg.cameras[0], ScriptedDetector(xyxy), stop)  # type: ignore[arg-type]
    detect = threading.Thread(target=worker._detect, daemon=True)

    def feed(n: int) -> None:
        for _ in range(n):
            worker._frames.put(Frame(frame, datetime.now(UTC), 0, time.monotonic()))

    with TestClient(app) as client:
        assert app.state.mqtt.wait_connected(10)
        setup_venue(app.state.db, venue, None)
        app.state.hub.reload()
        admin, operator = make_user(app.state.db, Role.admin), make_user(app.state.db, Role.operator)
        r = client.put(f"/api/v1/venues/{venue_id}/chart", content=cinema_chart_csv(),
                       headers={"Content-Type": "text/csv", **auth(admin)})
        assert r.status_code == 200
        worker.publisher.start()
        worker._attach_commands()
        detect.start()
        try:
            assert worker.publisher._connected.wait(10)
            feed(1)
            wait_until(lambda: worker.latest() is not None, what="first frame analysed")
            url = f"/api/v1/calibration/{venue_id}/cam1/seatmap"
            body = {"frame": [W, H], "pairs": cinema_pairs(boxes)}
            r = client.put(url, json=body, headers=auth(operator))
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["ok"] and out["seen"] == 41 and out["sections"] == {"hall": 41} and out["warnings"] == []
            sent = worker.camera
            assert [len(s.seat_map) for s in sent.sections] == [41]
            state = app.state.hub.venues[venue_id]

            def seats_reported() -> bool:  # a live camera keeps sending frames; counts go out every interval_s
                feed(1)
                time.sleep(0.05)
                reading = state.readings.get(("hall", "cam1"))
                return reading is not None and reading.taken is not None

            wait_until(seats_reported, what="seat-level occupancy from the edge")
            st = client.get(f"/api/v1/venues/{venue_id}/chart/state", headers=auth(operator)).json()
            seats = client.get(f"/api/v1/venues/{venue_id}/chart/seats", headers=auth(operator)).json()
            taken = {f"{seats['row'][i]}-{seats['seat'][i]}" for i, c in enumerate(st["states"]) if c == "o"}
            assert taken == {"D-5", "D-6", "E-2", "E-3"}
            assert (st["occupied"], st["empty"], st["unseen"], st["cameras"]) == (4, 37, 0, ["cam1"])
            # refused pairs: a clear 422, nothing sent, the edge keeps the layout it has
            mirror = [
                {"plan": p["plan"], "image": body["pairs"][j]["image"]}
                for p, j in zip(body["pairs"], (1, 0, 3, 2), strict=True)
            ]
            folded = {"frame": [W, H], "pairs": mirror}  # image points clicked right-to-left
            r = client.put(url, json=folded, headers=auth(operator))
            assert r.status_code == 422 and "folds the image" in r.json()["detail"][0]["msg"]
            r = client.put(url, json={"frame": [W, H], "pairs": body["pairs"][:3]}, headers=auth(operator))
            assert r.status_code == 422 and "at least 4 point pairs" in r.json()["detail"][0]["msg"]
            assert worker.camera is sent
            stored = client.get(url, headers=auth(operator)).json()
            assert stored["seen"] == 41 and stored["pairs"][""]["image"][0] == body["pairs"][0]["image"]
        finally:
            worker._frames.put(_STOP)
            detect.join(10)
            worker.close()
