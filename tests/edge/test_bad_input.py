"""Bad input: each gives one clear message naming what is wrong, and exit code 2 (user error)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edge.config import ConfigError, load_config
from tests.edge.conftest import run_turnout, vtest_config


@pytest.fixture
def good(shared: Path, tmp_path: Path, venue_id: str) -> dict:
    return vtest_config(shared, venue_id, "mqtt://127.0.0.1:1883", tmp_path / "state")


def test_malformed_yaml_names_file_and_line(write_config) -> None:
    path = write_config("venue: x\ncameras:\n  - id: a\n    sections: [[\n")
    result = run_turnout("edge", "check", "--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "malformed YAML at line" in result.stderr


def test_unknown_field_is_named(write_config, good: dict) -> None:
    good["cameras"][0]["analysis_fsp"] = 2  # typo
    path = write_config(good)
    result = run_turnout("edge", "run", "--config", str(path), "--duration", "1")
    assert result.returncode == 2
    assert "cameras.0.analysis_fsp: unknown field" in result.stderr
    assert str(path) in result.stderr


def test_polygon_with_two_points(write_config, good: dict) -> None:
    good["cameras"][0]["sections"][1]["polygon"] = [[0, 0], [10, 10]]
    path = write_config(good)
    result = run_turnout("edge", "check", "--config", str(path))
    assert result.returncode == 2
    assert "cameras.0.sections.1.polygon" in result.stderr
    assert "at least 3 points, got 2" in result.stderr


def test_wrong_type_and_missing_field(write_config, good: dict) -> None:
    good["cameras"][0]["sections"][0]["seats"] = "many"
    del good["venue"]
    with pytest.raises(ConfigError) as err:
        load_config(write_config(good))
    text = str(err.value)
    assert "venue: required field is missing" in text
    assert "cameras.0.sections.0.seats" in text and "integer" in text


def test_missing_model_lists_where_it_looked(write_config, good: dict, tmp_path: Path) -> None:
    good["model"]["path"] = "no-such-model"
    path = write_config(good)
    result = run_turnout("edge", "run", "--config", str(path), "--duration", "1")
    assert result.returncode == 2
    assert "model 'no-such-model' not found; looked in:" in result.stderr
    assert "no-such-model.onnx" in result.stderr
    assert "turnout models fetch" in result.stderr


def test_unreadable_video(write_config, good: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)  # header, then garbage
    good["cameras"][0]["source"] = str(broken)
    result = run_turnout("edge", "run", "--config", str(write_config(good)), "--duration", "1")
    assert result.returncode == 2
    assert "camera plaza-cam" in result.stderr and str(broken) in result.stderr
    assert "cannot decode video file" in result.stderr or "no frame could be decoded" in result.stderr


def test_missing_video_file(write_config, good: dict, tmp_path: Path) -> None:
    good["cameras"][0]["source"] = str(tmp_path / "nope.mp4")
    result = run_turnout("edge", "check", "--config", str(write_config(good)))
    assert result.returncode == 2
    assert "video file not found" in result.stdout + result.stderr


def test_unknown_broker_host_at_start(write_config, good: dict) -> None:
    good["mqtt"]["url"] = "mqtt://no-such-broker.invalid:1883"
    result = run_turnout("edge", "run", "--config", str(write_config(good)), "--duration", "1")
    assert result.returncode == 2
    assert "no-such-broker.invalid:1883" in result.stderr


def test_unreachable_broker_at_start(write_config, good: dict) -> None:
    """A refused connection: `check` and `run --require-broker` fail; plain `run` warns and spools."""
    from tests.conftest import free_port

    good["mqtt"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    path = write_config(good)
    strict = run_turnout("edge", "run", "--config", str(path), "--duration", "1", "--require-broker")
    assert strict.returncode == 2
    assert "127.0.0.1" in strict.stderr and "unreachable" in strict.stderr.lower()
    check = run_turnout("edge", "check", "--config", str(path))
    assert check.returncode == 2
    lenient = run_turnout("edge", "run", "--config", str(path), "--duration", "3")
    assert lenient.returncode == 0, lenient.stderr
    assert "on-disk queue" in lenient.stderr
    assert "queued" in lenient.stderr


def test_duplicate_section_ids_and_normalized_range(write_config, good: dict) -> None:
    good["cameras"][0]["sections"][1]["id"] = "west-walk"
    with pytest.raises(ConfigError, match="section ids must be unique"):
        load_config(write_config(good))
    good["cameras"][0]["sections"][1]["id"] = "east-walk"
    good["cameras"][0]["coordinates"] = "normalized"
    with pytest.raises(ConfigError, match=r"within 0\.\.1"):
        load_config(write_config(good))


def test_sample_configs_are_valid(shared: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "deploy"
    for name in ("edge-vtest.yaml", "edge-classroom.yaml"):
        path = root / name
        if name == "edge-classroom.yaml" and not path.exists():
            pytest.fail("deploy/edge-classroom.yaml is missing")
        cfg = load_config(path)
        assert Path(str(cfg.cameras[0].source)).is_file(), f"{name}: source does not resolve"
        assert yaml.safe_load(path.read_text())["venue"] == cfg.venue


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("sections", 0, "polygon"), [[0, 0], [100, 100], [100, 0], [0, 100]], "crosses itself"),
        (("exclude",), [[[0, 0], [50, 50], [50, 0], [0, 50]]], "exclude[0] crosses itself"),
        (("sections", 0, "seat_map"), [{"id": "s1", "point": [470, 350]}], "seat s1 lies outside section west-walk"),
        (("sections", 0, "seat_map"), [{"id": "s1", "polygon": [[10, 120], [40, 150], [40, 120], [10, 150]]}],
         "seat s1 polygon crosses itself"),
    ],
)  # fmt: skip
def test_geometry_is_checked_when_the_config_loads(write_config, good: dict, where, value, message) -> None:
    target = good["cameras"][0]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_config(good))


def test_port_out_of_range_and_stream_kinds(write_config, good: dict) -> None:
    good["mqtt"]["url"] = "mqtt://127.0.0.1:99999"
    with pytest.raises(ConfigError, match="port out of range"):
        load_config(write_config(good))
    good["mqtt"]["url"] = "mqtt://127.0.0.1:1883"
    kinds = {}
    for source in ("rtmp://cam/live", "udp://@:5000", "/dev/video0", 1, "rtsp://cam/s1", "https://cam/mjpg"):
        good["cameras"][0]["source"] = source
        cam = load_config(write_config(good)).cameras[0]
        kinds[str(source)] = cam.source_kind
        assert str(cam.source) == str(source), "stream URLs must not be rewritten as file paths"
    assert kinds == {"rtmp://cam/live": "stream", "udp://@:5000": "stream", "/dev/video0": "usb", "1": "usb",
                     "rtsp://cam/s1": "rtsp", "https://cam/mjpg": "http"}  # fmt: skip


def test_unset_password_env_is_a_clear_error(write_config, good: dict) -> None:
    good["mqtt"]["username"] = "edge-01"
    good["mqtt"]["password_env"] = "TURNOUT_TEST_SURELY_UNSET"
    result = run_turnout("edge", "run", "--config", str(write_config(good)), "--duration", "1")
    assert result.returncode == 2
    assert "TURNOUT_TEST_SURELY_UNSET is not set" in result.stderr
    assert "Traceback" not in result.stderr
