"""The edge sends each camera's count calibration (from its config) in every status message, retained; a camera
without calibration sends none. The real `turnout edge run` against the real broker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ConfigError, parse_config
from tests.edge.conftest import turnout_cmd, vtest_config
from tests.edge.mqtt_tools import Recorder
from turnout import contract
from turnout.contract import CameraState, Status

CALIBRATION = {"bias": 0.87, "spread": 0.06, "frames": 12, "at": "2026-05-01T18:30:00Z"}


def statuses(rec: Recorder, camera: str) -> list[tuple[Status, bool]]:
    return [(contract.decode(Status, m.payload), m.retain) for m in rec.on(f"/{camera}/status") if m.payload]


def clear_retained(host: str, port: int, topics: list[str]) -> None:
    """Remove the retained status messages this test left on the shared broker (empty retained payload)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_status_carries_the_configured_calibration(shared: Path, tmp_path: Path, write_config, system_broker,
                                                   venue_id: str) -> None:  # fmt: skip
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", analysis_fps=2, calibration=CALIBRATION)
    plain = {**cfg["cameras"][0], "id": "plain-cam"}
    plain.pop("calibration")
    cfg["cameras"].append(plain)
    path = write_config(cfg)
    host, port = system_broker.host, system_broker.port
    topics = [contract.status_topic(venue_id, cam) for cam in ("plaza-cam", "plain-cam")]
    rec = Recorder(host, port, f"turnout/v1/{venue_id}/+/status")
    edge = subprocess.Popen(turnout_cmd("edge", "run", "--config", str(path), "--duration", "12"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    late = after = None
    try:
        online = rec.wait_for(
            lambda r: all(any(s.state is CameraState.ONLINE for s, _ in statuses(r, c)) for c in ("plaza-cam", "plain-cam")),
            40,
        )
        assert online, f"cameras not online: {[m.payload for m in rec.messages]}"
        # a subscriber that arrives later gets the retained status, with the calibration
        late = Recorder(host, port, f"turnout/v1/{venue_id}/+/status")
        assert late.wait_for(lambda r: len(r.messages) >= 2, 10)
        _, stderr = edge.communicate(timeout=60)
        assert edge.returncode == 0, stderr[-2000:]
        after = Recorder(host, port, f"turnout/v1/{venue_id}/+/status")  # retained once the edge has stopped
        assert after.wait_for(lambda r: len(r.messages) >= 2, 10)
    finally:
        if edge.poll() is None:
            edge.terminate()
            edge.wait(20)
        for r in (rec, late, after):
            if r is not None:
                r.close()
        clear_retained(host, port, topics)

    expected = contract.CountCalibration.model_validate(CALIBRATION)
    calibrated, uncalibrated = statuses(rec, "plaza-cam"), statuses(rec, "plain-cam")
    assert [s.state for s, _ in calibrated][-1] is CameraState.OFFLINE
    assert len(calibrated) >= 2 and all(s.calibration == expected for s, _ in calibrated)
    assert len(uncalibrated) >= 2 and all(s.calibration is None for s, _ in uncalibrated)
    assert all(b'"calibration"' not in m.payload for m in rec.on("/plain-cam/status"))  # absent, not null
    for r in (late, after):  # the first message a new subscriber gets is the retained one
        status, retained = statuses(r, "plaza-cam")[0]
        assert retained and status.calibration == expected
        status, retained = statuses(r, "plain-cam")[0]
        assert retained and status.calibration is None
        assert all(s.calibration == expected for s, _ in statuses(r, "plaza-cam"))
    assert statuses(after, "plaza-cam")[0][0].state is CameraState.OFFLINE
    cleared = Recorder(host, port, f"turnout/v1/{venue_id}/+/status")
    cleared.barrier()  # a retained status would have come before the barrier's marker
    cleared.close()
    assert cleared.messages == [], "retained status left on the shared broker"


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"bias": 0.1, "spread": 0.05, "frames": 8}, "bias: Input should be greater than 0.2"),
        ({"bias": 1.0, "spread": -0.1, "frames": 8}, "spread: Input should be greater than or equal to 0"),
        ({"bias": 1.0, "spread": 0.1, "frames": 0}, "frames: Input should be greater than or equal to 1"),
        ({"bias": 1.0, "spread": 0.1, "frames": 8, "ratio": 2}, "ratio: unknown field"),
        ({"spread": 0.1, "frames": 8}, "bias: Field required"),
        ("0.9", "expected a mapping {bias, spread, frames, at}"),
    ],
)
def test_bad_calibration_block_is_a_clear_error(shared: Path, tmp_path: Path, calibration, message: str) -> None:
    cfg = vtest_config(shared, "v", "mqtt://127.0.0.1:1883", tmp_path, calibration=calibration)
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, "edge.yaml")
    text = str(err.value)
    assert "edge.yaml" in text and "cameras.0.calibration" in text and message in text, text
    assert "turnout edge calibrate" in text or "expected a mapping" in text


def test_calibration_time_without_offset_is_utc(shared: Path, tmp_path: Path, write_config) -> None:
    from edge.config import load_config

    cfg = vtest_config(shared, "v", "mqtt://127.0.0.1:1883", tmp_path, calibration={**CALIBRATION})
    text = write_config(cfg).read_text().replace("'2026-05-01T18:30:00Z'", "2026-05-01 18:30:00")
    assert "2026-05-01 18:30:00\n" in text
    path = tmp_path / "naive.yaml"
    path.write_text(text)
    cal = load_config(path).camera("plaza-cam").calibration
    assert cal.at is not None and cal.at.utcoffset().total_seconds() == 0 and cal.at.hour == 18
    status = Status(venue="v", camera="c", state=CameraState.ONLINE, ts=contract.utcnow(), calibration=cal)
    assert b"2026-05-01T18:30:00Z" in status.to_json()
