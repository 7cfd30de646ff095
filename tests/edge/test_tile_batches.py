"""Bounded tile batches (model.max_batch): tiles go to the runtime in small calls, the same people are found."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, EdgeConfig, load_config, parse_config
from edge.detector import Detector
from edge.tiling import batches

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def classroom() -> EdgeConfig:
    return load_config(REPO / "deploy/edge-classroom.yaml")


@pytest.fixture(scope="module")
def frames(classroom: EdgeConfig) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(classroom.camera("classroom").source))
    out = []
    for i in (40,):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        assert ok
        out.append(frame)
    cap.release()
    return out


def test_max_batch_1_4_and_unbounded_find_the_same_people(
    shared: Path, classroom: EdgeConfig, frames: list[np.ndarray]
) -> None:
    det = Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)
    detect = classroom.camera("classroom").detect.model_copy(update={"gate": {"enabled": False}})
    for frame in frames:
        found = {}
        for max_batch, calls in ((None, 1), (4, 2), (1, 6)):
            det.max_batch = max_batch
            found[max_batch] = det.detect(frame, detect)
            assert det.last_timing["tiles"] == 6 and det.last_timing["calls"] == calls
        assert len(found[None]) >= 8  # a seated class: the comparison is not between empty sets
        for max_batch in (4, 1):
            np.testing.assert_array_equal(found[max_batch].xyxy, found[None].xyxy)
            np.testing.assert_array_equal(found[max_batch].confidence, found[None].confidence)
    det.max_batch = 4
    buffer = det.blob([frames[0][:64, :64]] * 4)
    again = det.blob([frames[0][64:128, :64]] * 3)
    assert np.shares_memory(buffer, again)  # the input buffer is reused, not reallocated per call
    expected = cv2.dnn.blobFromImages([frames[0][64:128, :64]] * 3, 1 / 255.0, swapRB=True)
    np.testing.assert_allclose(again, expected, atol=1e-6)


def test_batches_are_even_and_bounded() -> None:
    assert [len(r) for r in batches(10, 4)] == [3, 4, 3]
    assert [len(r) for r in batches(84, 4)] == [4] * 21
    assert [list(r) for r in batches(3, None)] == [[0, 1, 2]]
    assert batches(0, 4) == []


def test_max_batch_zero_is_a_config_error(classroom: EdgeConfig) -> None:
    data = classroom.model_dump(mode="json")
    data["model"]["max_batch"] = 0
    with pytest.raises(ConfigError, match=r"model\.max_batch: Input should be greater than or equal to 1"):
        parse_config(data, "edge.yaml")
