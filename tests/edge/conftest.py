"""Helpers for edge tests: write a real edge config and run the real `turnout edge` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def vtest_config(shared: Path, venue: str, mqtt_url: str, state_dir: Path, **camera: Any) -> dict[str, Any]:
    """An edge config on vtest.avi (real footage) with three sections, as a dict."""
    cam = {
        "id": "plaza-cam",
        "source": str(shared / "data/videos/vtest.avi"),
        "loop": True,
        "realtime": True,
        "analysis_fps": 4,
        "anchor": "bottom_center",
        "sections": [
            {"id": "west-walk", "seats": 40, "polygon": [[0, 110], [200, 100], [230, 230], [0, 175]]},
            {"id": "east-walk", "seats": 60, "polygon": [[200, 100], [480, 60], [480, 300], [230, 230]]},
            {"id": "lawn", "seats": 80, "polygon": [[0, 175], [230, 230], [480, 300], [480, 360], [0, 360]]},
        ],
    }
    cam.update(camera)
    return {
        "venue": venue,
        "device": "edge-test",
        "state_dir": str(state_dir),
        "status_interval_s": 2,
        "mqtt": {"url": mqtt_url, "interval_s": 0.5},
        "model": {"path": str(shared / "models/yolo11n-recon.onnx"), "threads": 1},
        "cameras": [cam],
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any] | str], Path]:
    """Write a config (dict -> YAML, or raw text) to a file in tmp_path and return its path."""

    def write(content: dict[str, Any] | str, name: str = "edge.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def turnout_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "turnout.cli", *args]


def run_turnout(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real `turnout` command line and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(turnout_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env, **kw)
