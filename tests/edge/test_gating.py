"""Static-scene gating on real footage: a person who appears in a gated tile is counted within one refresh.

The shared footage has nobody sitting down (the classroom's students stay seated, the office clip pans), so the
event is a pedestrian of vtest.avi (fixed camera) walking into a tile whose detections were being reused.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import CameraConfig, GateConfig, load_config
from edge.detector import Detector
from edge.gating import TileGate
from edge.pipeline import CameraWorker
from edge.sources import Frame
from edge.tiling import tile_windows
from edge.zones import Layout

REPO = Path(__file__).parents[2]
START_S, END_S, FPS = 46.0, 55.0, 2.0  # walkers enter gated tiles: the west walk at 50 s, the lawn at 53.5 s


@dataclass
class Analysis:
    t: float
    counts: dict[str, int]
    reused: int
    ran: dict[tuple[int, int, int, int], float | None]  # tile -> when it last ran, after this frame


@pytest.fixture(scope="module")
def camera() -> CameraConfig:
    """The shipped vtest camera, tiled at 320x320 model input, scale 1.5 (6 tiles of 213 source pixels) with gating on."""
    cam = load_config(REPO / "deploy/edge-vtest.yaml").camera("plaza-cam")
    tiles = cam.detect.tiles.model_copy(update={"size": 320, "scale": 1.5, "overlap": 0.2})
    detect = cam.detect.model_copy(update={"mode": "tiled", "tiles": tiles, "gate": GateConfig(enabled=True)})
    return cam.model_copy(update={"detect": detect})


@pytest.fixture(scope="module")
def frames(camera: CameraConfig) -> list[tuple[float, np.ndarray]]:
    cap = cv2.VideoCapture(str(camera.source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        t = i / fps
        if not ok or t > END_S + 1e-6:
            break
        if t >= START_S - 1e-6 and round(t * fps) % round(fps / FPS) == 0:
            out.append((round(t, 3), frame))
        i += 1
    cap.release()
    assert len(out) == round((END_S - START_S) * FPS) + 1
    return out


@pytest.fixture(scope="module")
def detector(shared: Path) -> Detector:
    return Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2, max_batch=6)


def analyse(det: Detector, cam: CameraConfig, frames: list, gate: TileGate | None) -> list[Analysis]:
    layout = Layout(cam, *frames[0][1].shape[1::-1])
    keys = [(w.x0, w.y0, w.x1, w.y1) for w in tile_windows(*frames[0][1].shape[1::-1], cam.detect.tiles)]
    out = []
    for t, frame in frames:
        tally = layout.count(det.detect(frame, cam.detect, gate=gate, now=t))
        ran = {k: gate.ran_at(k) for k in keys} if gate else {}
        out.append(Analysis(t, {k: v.people for k, v in tally.items()}, int(det.last_timing["tiles_reused"]), ran))
    return out


@pytest.fixture(scope="module")
def ungated(detector: Detector, camera: CameraConfig, frames: list) -> list[Analysis]:
    return analyse(detector, camera, frames, None)


def stable_changes(series: list[Analysis], section: str) -> list[tuple[float, int]]:
    """(time, new count) of each change of a section's count that holds for the next analysis too."""
    vals = [a.counts[section] for a in series]
    return [(series[i].t, vals[i]) for i in range(1, len(vals) - 1) if vals[i - 1] != vals[i] == vals[i + 1]]


def test_person_entering_a_gated_tile_is_counted_at_once(
    detector: Detector, camera: CameraConfig, frames: list, ungated: list[Analysis]
) -> None:
    gate = TileGate(camera.detect.gate)
    gated = analyse(detector, camera, frames, gate)
    assert sum(a.reused for a in gated) >= len(gated) // 2  # tiles were reused: gating is not a no-op here
    events = [(sec, *change) for sec in ungated[0].counts for change in stable_changes(ungated, sec)]
    assert {("west-walk", 50.0, 1), ("lawn", 53.5, 2)} <= set(events)  # a walker onto each
    woke = {  # times when a tile that had been reusing its detections (gated) ran again: its pixels changed
        a.t for prev, a in itertools.pairwise(gated)
        if any(at == a.t and prev.ran[k] is not None and prev.ran[k] < prev.t for k, at in a.ran.items())
    }
    assert {50.0, 53.5} <= woke  # both walkers stepped into a gated tile and woke it
    for section, te, new in events:
        i = next(i for i, a in enumerate(gated) if a.t == te)
        assert gated[i].counts[section] == new  # counted at once, far within refresh_s (30 s)
    assert [a.counts for a in gated] == [a.counts for a in ungated]  # and the counts never differ


def test_forced_refresh_bounds_staleness(
    detector: Detector, camera: CameraConfig, frames: list, ungated: list[Analysis]
) -> None:
    """With change detection off (threshold 1), tiles run only on refresh: every change shows within refresh_s."""
    refresh = 2.0
    gate = TileGate(GateConfig(enabled=True, threshold=1.0, refresh_s=refresh))
    gated = analyse(detector, camera, frames, gate)
    runs = [a for a in gated if a.reused == 0]
    assert [a.t for a in runs] == [START_S + k * refresh for k in range(5)]
    events = [(sec, te, new) for sec in ungated[0].counts for te, new in stable_changes(ungated, sec)
              if te + refresh <= END_S]  # the segment shows whether the count followed
    assert len(events) >= 4  # counts change in all three sections in this segment
    for section, te, new in events:
        within = [a.counts[section] for a in gated if te <= a.t <= te + refresh]
        assert new in within, f"{section} -> {new} at {te} s not counted by {te + refresh} s"
    for a, u in zip(gated, ungated, strict=True):
        if a.reused == 0:
            assert a.counts == u.counts  # a refreshed frame is exactly the ungated analysis


def test_camera_worker_gates_on_frame_time(camera: CameraConfig, detector: Detector, frames: list, tmp_path: Path) -> None:
    """The pipeline keeps one gate per camera and gates on the frames' own time: unchanged pixels are reused
    until refresh_s (30 s) has passed."""
    cfg = load_config(REPO / "deploy/edge-vtest.yaml")
    cfg = cfg.model_copy(update={"cameras": [camera], "state_dir": tmp_path / "state"})
    worker = CameraWorker(cfg, camera, detector, threading.Event())  # publisher never started: no broker
    t0 = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    try:
        for seconds in (0.0, 0.5, 29.0, 30.5):
            worker._analyse(Frame(frames[0][1], t0 + timedelta(seconds=seconds), 0, time.monotonic()))
        assert (worker.stats.tiles_run, worker.stats.tiles_reused) == (12, 12)  # ran at 0 and 30.5 s only
    finally:
        worker.close()


def test_gating_is_on_by_default_for_seated_cameras_only() -> None:
    seated = load_config(REPO / "deploy/edge-classroom.yaml").camera("classroom")
    standing = load_config(REPO / "deploy/edge-vtest.yaml").camera("plaza-cam")
    assert seated.gating and not standing.gating
    assert seated.detect.gate.refresh_s == 30.0
    off = seated.detect.model_copy(update={"gate": GateConfig(enabled=False)})
    assert not seated.model_copy(update={"detect": off}).gating
