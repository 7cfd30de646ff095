"""End to end: the real `turnout edge run` on real footage publishes schema-valid counts to a real broker."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jsonschema

from tests.edge.conftest import run_turnout, vtest_config
from tests.edge.mqtt_tools import Recorder as VenueRecorder
from turnout import contract

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "mqtt-v1.schema.json"


class Recorder:
    """Every message of a venue, per topic kind (``occupancy``, ``status``, ...), from an independent subscriber
    (`tests.edge.mqtt_tools.Recorder`: subscribed before the constructor returns)."""

    def __init__(self, host: str, port: int, venue: str) -> None:
        self.rec = VenueRecorder(host, port, f"turnout/v1/{venue}/#")

    @property
    def messages(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {"occupancy": [], "status": []}
        for m in self.rec.messages:
            out.setdefault(m.topic.rsplit("/", 1)[-1], []).append(m.payload)
        return out

    def close(self) -> None:
        """Stop once everything already published (an edge's last ``offline`` status) has arrived."""
        try:
            self.rec.barrier()
        finally:
            self.rec.close()


def test_edge_run_publishes_valid_counts(shared: Path, tmp_path: Path, write_config, system_broker, venue_id) -> None:
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", analysis_fps=2)
    path = write_config(cfg)
    sub = Recorder(system_broker.host, system_broker.port, venue_id)
    try:
        result = run_turnout("edge", "run", "--config", str(path), "--duration", "20", timeout=90)
    finally:
        sub.close()
    assert result.returncode == 0, result.stderr[-2000:]

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema["$defs"]["occupancy"])
    occupancy = [json.loads(raw) for raw in sub.messages["occupancy"]]
    assert len(occupancy) >= 10, f"only {len(occupancy)} occupancy messages in 20 s"
    for payload in occupancy:
        validator.validate(payload)
        contract.Occupancy.model_validate(payload)
        assert payload["venue"] == venue_id and payload["camera"] == "plaza-cam"
        for section in payload["sections"]:
            assert section["occupied"] <= section["seats"]
    seqs = [p["seq"] for p in occupancy]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "seq must strictly increase"
    # vtest has people walking on the paths: counts are not all zero and they change over 20 s
    people = [sum(s["people"] for s in p["sections"]) for p in occupancy]
    assert max(people) >= 2 and len(set(people)) > 1
    assert {p["model"] for p in occupancy} == {"yolo11n-recon"}

    states = [json.loads(raw)["state"] for raw in sub.messages["status"]]
    # "degraded" (starting) until the first frame is analysed, then online; a graceful stop publishes offline
    assert states[0] in ("degraded", "online") and "online" in states and states[-1] == "offline"
    assert "plaza-cam[online]" in result.stderr  # the periodic status line


def test_seq_continues_across_restarts(shared: Path, tmp_path: Path, write_config, system_broker, venue_id) -> None:
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", realtime=False)
    path = write_config(cfg)
    sub = Recorder(system_broker.host, system_broker.port, venue_id)
    try:
        for _ in range(2):
            result = run_turnout("edge", "run", "--config", str(path), "--duration", "4", timeout=60)
            assert result.returncode == 0, result.stderr[-2000:]
    finally:
        sub.close()
    seqs = [json.loads(raw)["seq"] for raw in sub.messages["occupancy"]]
    assert len(seqs) >= 4
    assert seqs == sorted(set(seqs)), "seq must strictly increase across an edge restart"


def test_two_cameras_one_device(shared: Path, tmp_path: Path, write_config, system_broker, venue_id) -> None:
    """A standing-crowd camera and a tiled seating camera share one detector; each publishes its own counts."""
    cfg = vtest_config(shared, venue_id, system_broker.url, tmp_path / "state", realtime=False)
    cfg["cameras"].append(
        {
            "id": "hall-cam",
            "source": str(shared / "data/videos/classroom_cctv_fixed_640x352_11s.mp4"),
            "realtime": False,
            "analysis_fps": 2,
            "anchor": "center",
            "detect": {"mode": "tiled", "conf": 0.2, "tiles": {"scale": 2.0, "overlap": 0.25}},
            "sections": [{"id": "seats", "seats": 36, "polygon": [[15, 50], [600, 50], [600, 330], [15, 330]]}],
        }
    )
    sub = Recorder(system_broker.host, system_broker.port, venue_id)
    try:
        result = run_turnout("edge", "run", "--config", str(write_config(cfg)), "--duration", "10", timeout=60)
    finally:
        sub.close()
    assert result.returncode == 0, result.stderr[-2000:]
    by_camera: dict[str, list[dict]] = {}
    for raw in sub.messages["occupancy"]:
        payload = json.loads(raw)
        by_camera.setdefault(payload["camera"], []).append(payload)
    assert set(by_camera) == {"plaza-cam", "hall-cam"}
    hall = by_camera["hall-cam"]
    assert {p["processing"]["tiles"] for p in hall} == {6}  # 640x352 at 2x in 640 tiles, 25 % overlap
    assert {p["processing"]["tiles"] for p in by_camera["plaza-cam"]} == {1}
    assert 8 <= hall[-1]["sections"][0]["occupied"] <= 20  # about 14 seated students
    for msgs in by_camera.values():
        seqs = [p["seq"] for p in msgs]
        assert seqs == sorted(set(seqs))
