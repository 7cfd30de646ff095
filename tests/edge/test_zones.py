"""Sections, seats, excluded areas and hysteresis on hand-built detections."""

from __future__ import annotations

import numpy as np
import pytest

from edge.config import Anchor, CameraConfig
from edge.detections import Detections
from edge.zones import Layout, SectionSmoother, SectionTally


def boxes(*xyxy: tuple[float, float, float, float]) -> Detections:
    arr = np.asarray(xyxy, np.float32).reshape(-1, 4)
    return Detections(arr, np.full(len(arr), 0.9, np.float32))


def camera(**kw) -> CameraConfig:
    base = {
        "id": "cam",
        "source": "x.mp4",
        "sections": [
            {"id": "A", "seats": 2, "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]},
            {"id": "B", "seats": 10, "polygon": [[100, 0], [200, 0], [200, 100], [100, 100]]},
        ],
    }
    base.update(kw)
    return CameraConfig.model_validate(base)


def test_anchor_decides_the_section() -> None:
    stacked = [
        {"id": "A", "seats": 5, "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]},
        {"id": "B", "seats": 5, "polygon": [[0, 100], [100, 100], [100, 200], [0, 200]]},
    ]
    det = boxes((10, 20, 30, 170))  # head and torso in A, feet in B
    where = {}
    for anchor in ("bottom_center", "center", "top_center"):
        tally = Layout(camera(anchor=anchor, sections=stacked), 100, 200).count(det)
        where[anchor] = [sid for sid, t in tally.items() if t.people]
    assert where == {"bottom_center": ["B"], "center": ["A"], "top_center": ["A"]}
    assert det.anchors(Anchor.TOP_CENTER)[0, 1] == pytest.approx(35.0)


def test_occupied_capped_people_reported_separately() -> None:
    layout = Layout(camera(anchor="center"), 200, 100)
    tally = layout.count(boxes((10, 10, 20, 20), (30, 30, 40, 40), (50, 50, 60, 60)))
    assert tally["A"] == SectionTally(people=3, occupied=2)
    assert tally["B"] == SectionTally(people=0, occupied=0)


def test_excluded_area_and_normalized_coordinates() -> None:
    cam = camera(
        anchor="center",
        coordinates="normalized",
        sections=[{"id": "A", "seats": 5, "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
        exclude=[[[0.5, 0], [1, 0], [1, 1], [0.5, 1]]],
    )
    layout = Layout(cam, 640, 360)
    tally = layout.count(boxes((10, 10, 30, 30), (400, 10, 420, 30)))
    assert tally["A"].people == 1  # the second person stands on the stage (excluded)


def test_seat_map_assigns_each_seat_once() -> None:
    cam = camera(
        anchor="center",
        sections=[
            {
                "id": "A",
                "seats": 3,
                "polygon": [[0, 0], [300, 0], [300, 100], [0, 100]],
                "seat_map": [
                    {"id": "A1", "point": [50, 50]},
                    {"id": "A2", "point": [150, 50]},
                    {"id": "A3", "polygon": [[220, 20], [280, 20], [280, 80], [220, 80]]},
                ],
            }
        ],
    )
    layout = Layout(cam, 300, 100)
    # two people near A1 (only one can sit there), one in A3, nobody near A2
    tally = layout.count(boxes((35, 30, 65, 70), (40, 32, 70, 72), (235, 30, 265, 70)))["A"]
    assert tally.people == 3
    assert tally.seats_taken == {"A1", "A3"}
    assert tally.occupied == 2


def test_smoother_holds_a_brief_miss_and_returns_to_zero() -> None:
    cam = camera(anchor="center")
    layout = Layout(cam, 200, 100)
    smoother = SectionSmoother(window=5)
    seated = boxes((10, 10, 20, 20), (30, 30, 40, 40))
    seen = []
    for dets in [seated, seated, seated, boxes(), seated, boxes(), seated]:
        seen.append(smoother.update(layout.count(dets), layout)["A"].occupied)
    assert seen[3:] == [2, 2, 2, 2], "a person missed for a frame must not flicker out"
    for _ in range(3):
        last = smoother.update(layout.count(boxes()), layout)["A"].occupied
    assert last == 0, "an emptied section returns to zero"


def test_seat_hysteresis() -> None:
    cam = camera(
        anchor="center",
        sections=[
            {
                "id": "A",
                "seats": 1,
                "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]],
                "seat_map": [{"id": "A1", "point": [50, 50]}],
            }
        ],
    )
    layout = Layout(cam, 100, 100)
    smoother = SectionSmoother(seat_on=2, seat_off=3)
    person, nobody = boxes((40, 40, 60, 60)), boxes()
    states = [
        smoother.update(layout.count(d), layout)["A"].occupied
        for d in [person, person, nobody, nobody, person, nobody, nobody, nobody]
    ]
    assert states == [0, 1, 1, 1, 1, 1, 1, 0]


def test_self_crossing_polygon_is_rejected() -> None:
    with pytest.raises(ValueError, match="crosses itself"):
        camera(sections=[{"id": "A", "seats": 1, "polygon": [[0, 0], [10, 10], [10, 0], [0, 10]]}])


def test_smoother_is_warm_only_after_its_window() -> None:
    """The pipeline publishes only once the smoother has seen enough frames (no false zero at start)."""
    layout = Layout(camera(anchor="center"), 200, 100)
    smoother = SectionSmoother(window=3, seat_on=2)
    warm = []
    for _ in range(4):
        smoother.update(layout.count(boxes((10, 10, 20, 20))), layout)
        warm.append(smoother.warm)
    assert warm == [False, False, True, True]
    smoother.reset()
    assert not smoother.warm
