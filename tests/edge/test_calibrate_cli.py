"""`turnout edge calibrate` on the real classroom video: writes the best setting, never a worse one."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from edge.config import load_config
from tests.edge.conftest import run_turnout

CLASSROOM = Path(__file__).resolve().parents[2] / "deploy" / "edge-classroom.yaml"


def _errors(output: str) -> tuple[float, float]:
    m = re.search(r"error before: ([\d.]+)\s+after: ([\d.]+)", output)
    assert m, output
    return float(m[1]), float(m[2])


@pytest.fixture
def classroom_config(tmp_path: Path, shared: Path) -> Path:
    text = CLASSROOM.read_text().replace("${TURNOUT_SHARED}", str(shared))
    text = text.replace("state_dir: ../var/edge-classroom", f"state_dir: {tmp_path / 'state'}")
    path = tmp_path / "edge-classroom.yaml"
    path.write_text(text)
    return path


def test_calibrate_keeps_a_good_setting(classroom_config: Path) -> None:
    before_cfg = load_config(classroom_config).camera("classroom").detect
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom",
                         "--count", "14", "--frames", "5", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = _errors(result.stdout)
    assert after <= before
    after_cfg = load_config(classroom_config).camera("classroom").detect
    if after == before:
        assert after_cfg == before_cfg
    assert "# Default seating config" in classroom_config.read_text()  # comments survive a rewrite


def test_calibrate_repairs_a_bad_setting(classroom_config: Path) -> None:
    text = classroom_config.read_text()
    text = re.sub(r"      mode: tiled\n", "      mode: full\n", text)
    text = text.replace("conf: 0.2 ", "conf: 0.5 ")
    classroom_config.write_text(text)
    bad = load_config(classroom_config).camera("classroom").detect
    assert (bad.mode, bad.conf) == ("full", 0.5)
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom",
                         "--count", "14", "--frames", "5", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = _errors(result.stdout)
    assert before >= 5 and after <= before / 3, result.stdout
    fixed = load_config(classroom_config).camera("classroom").detect
    assert fixed != bad and "updated cameras[classroom].detect" in result.stdout


def test_calibrate_needs_exactly_one_target(classroom_config: Path) -> None:
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "classroom")
    assert result.returncode == 2 and "exactly one of --count N or --points FILE" in result.stderr
    result = run_turnout("edge", "calibrate", "--config", str(classroom_config), "--camera", "nope", "--count", "3")
    assert result.returncode == 2 and "no camera 'nope'" in result.stderr
    assert os.path.exists(classroom_config)
