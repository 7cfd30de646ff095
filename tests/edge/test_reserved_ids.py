"""A camera id that is a topic word of the contract (alerts, cmd, ...) is refused when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from turnout.contract import RESERVED_CAMERA_IDS

CONFIG = """
device: box1
venue: v1
mqtt: {{url: "mqtt://127.0.0.1:1883"}}
cameras:
  - id: {cid}
    source: rtsp://127.0.0.1:8554/cam
    sections: [{{id: s1, seats: 10, polygon: [[0, 0], [10, 0], [10, 10]]}}]
"""


@pytest.mark.parametrize("cid", [*sorted(RESERVED_CAMERA_IDS), "Alerts"])
def test_reserved_camera_ids_are_refused(tmp_path: Path, cid: str) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(CONFIG.format(cid=cid))
    with pytest.raises(ConfigError, match=rf"cameras\.0\.id: camera id '{cid}' is a reserved topic word"):
        load_config(path)


def test_an_ordinary_id_loads(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(CONFIG.format(cid="north-stand"))
    assert load_config(path).cameras[0].id == "north-stand"
