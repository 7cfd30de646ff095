"""Calibration end to end: browser -> server -> MQTT -> edge CommandHandler (real Publisher) and back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge.commands import CommandHandler
from edge.config import CameraConfig, MqttConfig
from edge.detector import Detector
from edge.publisher import Publisher
from tests.ui.conftest import ARTIFACTS, CAM1_SECTIONS, EDGE_CAMERA, LiveServer, api_token, login
from turnout import contract

pytestmark = pytest.mark.browser


class EdgeCamera:
    """The edge side of one camera: a real frame and detections, the real Publisher and CommandHandler."""

    def __init__(self, server: LiveServer, video: Path, model: Path, state_dir: Path) -> None:
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        cap.release()
        assert ok, f"cannot read {video}"
        self.camera = CameraConfig(id=EDGE_CAMERA, source=str(video), sections=CAM1_SECTIONS)
        self.frame: np.ndarray = frame
        self.detections = Detector(model, threads=1).detect(frame, self.camera.detect)
        self.applied: list[CameraConfig] = []
        self.applied_event = threading.Event()
        self.publisher = Publisher(
            MqttConfig(url=server.broker.url), venue=server.venue, camera=EDGE_CAMERA, state_dir=state_dir
        )
        self.handler = CommandHandler(
            self.publisher,
            server.venue,
            EDGE_CAMERA,
            latest=lambda: (self.frame, self.detections),
            current_layout=lambda: self.camera,
            apply_layout=self._apply,
        )

    def _apply(self, cfg: CameraConfig) -> None:
        self.camera = cfg
        self.applied.append(cfg)
        self.applied_event.set()

    def start(self) -> EdgeCamera:
        self.publisher.start()
        self.handler.attach()
        return self


@pytest.fixture
def edge(live_server: LiveServer, shared: Path, model_path: Path, tmp_path: Path) -> Iterator[EdgeCamera]:
    cam = EdgeCamera(live_server, shared / "data" / "videos" / "vtest.avi", model_path, tmp_path).start()
    assert cam.publisher._connected.wait(10), "edge publisher did not connect"
    yield cam
    # leave no retained layout behind on the shared broker
    live_server.publish(contract.layout_topic(live_server.venue, EDGE_CAMERA), b"", retain=True)
    cam.publisher.stop(flush_s=1)


def test_snapshot_edit_and_save_layout_applied_by_edge(page, live_server: LiveServer, edge: EdgeCamera) -> None:
    assert len(edge.detections) > 0, "the real model should find people on the first vtest frame"
    login(page, live_server, path="/calibration")
    page.wait_for_selector(f"#camera-select option[value='{live_server.venue}/{EDGE_CAMERA}']", state="attached")
    page.select_option("#camera-select", f"{live_server.venue}/{EDGE_CAMERA}")
    page.click("#snapshot-btn")
    page.wait_for_selector("#snap-status:has-text('received')", timeout=15_000)
    size = page.evaluate(
        "[document.querySelector('#snapshot').naturalWidth, document.querySelector('#snapshot').naturalHeight]"
    )
    assert size == [480, 360]
    assert page.locator("#overlay polygon").count() == 2
    assert edge.handler.snapshots_sent == 1

    # move the first corner of section "north" 10 px right and 20 px down, with the keyboard
    page.locator("#section-list button", has_text="Edit north").click()
    handle = page.locator("#overlay circle[data-vertex='0']")
    handle.focus()
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    page.fill("#seats-0", "55")
    page.dispatch_event("#seats-0", "change")
    page.screenshot(path=str(ARTIFACTS / "calibration-edited.png"))
    page.click("#save-btn")
    page.wait_for_selector("#save-status:has-text('applied by the edge')", timeout=15_000)

    assert edge.applied_event.wait(5)
    north = next(s for s in edge.applied[-1].sections if s.id == "north")
    x0, y0 = CAM1_SECTIONS[0]["polygon"][0]
    assert north.polygon[0] == pytest.approx((x0 + 10, y0 + 20), abs=0.1)
    assert north.seats == 55
    assert edge.applied[-1].sections[1].polygon == [tuple(p) for p in CAM1_SECTIONS[1]["polygon"]]


def test_edge_refuses_bad_layout_with_reasons(live_server: LiveServer, edge: EdgeCamera) -> None:
    token = api_token(live_server)
    bowtie = [[0, 0], [100, 100], [100, 0], [0, 100]]  # crosses itself
    r = httpx.put(
        f"{live_server.url}/api/v1/calibration/{live_server.venue}/{EDGE_CAMERA}/layout",
        json={"sections": [{"id": "north", "seats": 10, "polygon": bowtie}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False
    assert any("crosses itself" in e for e in body["errors"]), body
    # never applied (the server may re-send the last accepted layout of an earlier test, which is fine)
    assert not any(s.polygon == [tuple(map(float, p)) for p in bowtie] for c in edge.applied for s in c.sections)
    r = httpx.put(
        f"{live_server.url}/api/v1/calibration/{live_server.venue}/{EDGE_CAMERA}/layout",
        json={"sections": [{"id": "north", "seats": -3, "polygon": [[0, 0], [1, 0]]}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    errors = r.json()["errors"]
    assert any("sections.0.seats" in e for e in errors) and any("sections.0.polygon" in e for e in errors), errors


def test_calibration_needs_operator(live_server: LiveServer) -> None:
    r = httpx.post(f"{live_server.url}/api/v1/calibration/{live_server.venue}/{EDGE_CAMERA}/snapshot", timeout=10)
    assert r.status_code == 401
    viewer = api_token(live_server, user="watcher")
    r = httpx.post(
        f"{live_server.url}/api/v1/calibration/{live_server.venue}/{EDGE_CAMERA}/snapshot",
        headers={"Authorization": f"Bearer {viewer}"},
        timeout=10,
    )
    assert r.status_code == 403
