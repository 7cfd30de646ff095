"""The ONNX person detector against Ultralytics' own predictor (reference JSON in ../shared)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import DetectConfig, TileConfig
from edge.detector import Detector, ModelError, letterbox

REF_CFG = DetectConfig(conf=0.25, iou=0.7, max_det=300)  # the reference's predictor args


@pytest.fixture(scope="module")
def reference(shared: Path) -> dict:
    ref = json.loads((shared / "data/reference/ultralytics-yolo11n-recon.json").read_text())
    assert ref["args"]["conf"] == REF_CFG.conf and ref["args"]["iou"] == REF_CFG.iou
    assert ref["args"]["imgsz"] == 640
    return ref


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    return Detector(model_path, threads=2)


def vtest_frames(shared: Path, every: int) -> list[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(str(shared / "data/videos/vtest.avi"))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            out.append((i, frame))
        i += 1
    cap.release()
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def test_metadata(detector: Detector) -> None:
    assert detector.name == "yolo11n-recon"
    assert detector.input_size == (640, 640)
    assert detector.dynamic is False
    assert detector.names[detector.person] == "person"


def test_letterbox_matches_ultralytics_geometry() -> None:
    img = np.full((360, 480, 3), 7, np.uint8)
    out, lb = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3)
    assert (lb.pad_x, lb.pad_y) == (0, 80) and lb.gain == pytest.approx(640 / 480)
    assert (out[:80] == 114).all() and (out[80:560] == 7).all() and (out[560:] == 114).all()
    rect, lb2 = letterbox(img, (640, 640), auto=True)
    assert rect.shape == (480, 640, 3) and lb2.pad_y == 0


def test_parity_with_ultralytics_on_vtest(shared: Path, detector: Detector, reference: dict) -> None:
    """Per-frame person counts within ±1 of the predictor's on >= 95 % of (every 6th) vtest frame."""
    ref = {f["frame"]: f["persons"] for f in reference["sources"]["videos/vtest.avi"]["frames"]}
    frames = vtest_frames(shared, every=6)
    assert len(frames) > 100
    diffs = np.array([len(detector.detect(frame, REF_CFG)) - ref[i] for i, frame in frames])
    within = float(np.mean(np.abs(diffs) <= 1))
    assert within >= 0.95, f"only {within:.1%} of frames within ±1 (diffs {np.unique(diffs, return_counts=True)})"
    timing = detector.last_timing
    assert set(timing) >= {"preprocess", "inference", "postprocess", "tiles"} and timing["tiles"] == 1


@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_boxes_match_reference(shared: Path, detector: Detector, reference: dict, image: str) -> None:
    expected = np.array(reference["sources"]["images"][f"images/{image}"]["boxes"], np.float32)
    dets = detector.detect(cv2.imread(str(shared / "data/images" / image)), REF_CFG)
    assert len(dets) == len(expected)
    ious = iou_matrix(expected[:, :4], dets.xyxy)
    assert (ious.max(axis=1) > 0.95).all(), ious
    best = ious.argmax(axis=1)
    np.testing.assert_allclose(dets.confidence[best], expected[:, 4], atol=0.02)


def test_dynamic_model_batches_and_agrees(shared: Path, detector: Detector, reference: dict) -> None:
    dyn = Detector(shared / "models/yolo11n-recon-dyn.onnx", threads=2)
    assert dyn.dynamic and dyn.batch_dynamic and dyn.input_size == (640, 640)
    ref = {f["frame"]: f["persons"] for f in reference["sources"]["videos/vtest.avi"]["frames"]}
    frames = vtest_frames(shared, every=40)
    diffs = [len(dyn.detect(frame, REF_CFG)) - ref[i] for i, frame in frames]
    assert np.mean(np.abs(diffs) <= 1) >= 0.9, diffs


def test_shared_between_threads(shared: Path, detector: Detector) -> None:
    frames = [f for _, f in vtest_frames(shared, every=100)]
    sequential = [detector.detect(f, REF_CFG).xyxy for f in frames]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda f: detector.detect(f, REF_CFG).xyxy, frames))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_thresholds_are_applied(shared: Path, detector: Detector) -> None:
    frame = cv2.imread(str(shared / "data/images/bus.jpg"))
    low = detector.detect(frame, DetectConfig(conf=0.05))
    high = detector.detect(frame, DetectConfig(conf=0.8))
    assert len(low) > len(high)
    assert (high.confidence >= 0.8).all() and (low.confidence >= 0.05).all()
    assert len(detector.detect(frame, DetectConfig(conf=0.05, max_det=2))) == 2


# ------------------------------------------------------------------------------ end-to-end (1, 300, 6)
def build_end2end(src: Path, dst: Path, k: int = 300) -> None:
    """Wrap the real raw-head model into an NMS-free-style (1, k, 6) output with ONNX graph ops.

    Each anchor keeps only its best class, ONNX NonMaxSuppression picks the boxes, rows are
    x1,y1,x2,y2,score,class padded with zeros to k - the layout of Ultralytics' end-to-end exports.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    raw = g.output[0].name

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    const("e2e_s0", np.array([0], np.int64))
    const("e2e_s4", np.array([4], np.int64))
    const("e2e_s84", np.array([10_000], np.int64))
    const("e2e_ax1", np.array([1], np.int64))
    const("e2e_maxout", np.array([k], np.int64))
    const("e2e_iou", np.array([0.7], np.float32))
    const("e2e_thr", np.array([0.001], np.float32))
    const("e2e_k", np.array([k], np.int64))
    const("e2e_zero2", np.array([0, 0], np.int64))
    const("e2e_zero1", np.array([0], np.int64))
    const("e2e_half", np.array([0.5], np.float32))
    const("e2e_two2", np.array([2, 2], np.int64))
    nodes = [
        helper.make_node("Slice", [raw, "e2e_s0", "e2e_s4", "e2e_ax1"], ["e2e_cxcywh"]),  # (1,4,N)
        helper.make_node("Slice", [raw, "e2e_s4", "e2e_s84", "e2e_ax1"], ["e2e_cls"]),  # (1,C,N)
        helper.make_node("ReduceMax", ["e2e_cls"], ["e2e_best"], axes=[1], keepdims=1),
        helper.make_node("Equal", ["e2e_cls", "e2e_best"], ["e2e_isbest"]),
        helper.make_node("Cast", ["e2e_isbest"], ["e2e_isbestf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["e2e_cls", "e2e_isbestf"], ["e2e_scores"]),  # (1,C,N)
        helper.make_node("Transpose", ["e2e_cxcywh"], ["e2e_boxes"], perm=[0, 2, 1]),  # (1,N,4)
        helper.make_node(
            "NonMaxSuppression",
            ["e2e_boxes", "e2e_scores", "e2e_maxout", "e2e_iou", "e2e_thr"],
            ["e2e_sel"],
            center_point_box=1,
        ),  # (M,3) batch,class,box
    ]
    idx = {name: const(f"e2e_col{i}", np.array([i], np.int64)) for i, name in enumerate("bcx")}
    nodes += [
        helper.make_node("Gather", ["e2e_sel", idx["c"]], ["e2e_selc"], axis=1),  # (M,1)
        helper.make_node("Gather", ["e2e_sel", idx["x"]], ["e2e_selx"], axis=1),  # (M,1)
        helper.make_node("Squeeze", ["e2e_selx", "e2e_ax1"], ["e2e_box_idx"]),  # (M,)
        helper.make_node("Squeeze", ["e2e_boxes", "e2e_zero1"], ["e2e_boxes0"]),  # (N,4)
        helper.make_node("Gather", ["e2e_boxes0", "e2e_box_idx"], ["e2e_selbox"], axis=0),  # (M,4) cxcywh
        helper.make_node("GatherND", ["e2e_scores", "e2e_sel"], ["e2e_selscore"]),  # (M,)
        helper.make_node("Unsqueeze", ["e2e_selscore", "e2e_ax1"], ["e2e_score_col"]),  # (M,1)
        helper.make_node("Cast", ["e2e_selc"], ["e2e_cls_col"], to=TensorProto.FLOAT),
        helper.make_node("Split", ["e2e_selbox", "e2e_two2"], ["e2e_cxcy", "e2e_wh"], axis=1),
        helper.make_node("Mul", ["e2e_wh", "e2e_half"], ["e2e_hwh"]),
        helper.make_node("Sub", ["e2e_cxcy", "e2e_hwh"], ["e2e_xy1"]),
        helper.make_node("Add", ["e2e_cxcy", "e2e_hwh"], ["e2e_xy2"]),
        helper.make_node("Concat", ["e2e_xy1", "e2e_xy2", "e2e_score_col", "e2e_cls_col"], ["e2e_rows"], axis=1),
        helper.make_node("Shape", ["e2e_rows"], ["e2e_shape"]),
        helper.make_node("Slice", ["e2e_shape", "e2e_zero1", "e2e_ax1"], ["e2e_m"]),
        helper.make_node("Sub", ["e2e_k", "e2e_m"], ["e2e_padn"]),
        helper.make_node("Concat", ["e2e_zero2", "e2e_padn", "e2e_zero1"], ["e2e_pads"], axis=0),
        helper.make_node("Pad", ["e2e_rows", "e2e_pads"], ["e2e_padded"]),  # (k,6)
        helper.make_node("Unsqueeze", ["e2e_padded", "e2e_zero1"], ["e2e_out"]),  # (1,k,6)
    ]
    g.node.extend(nodes)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("e2e_out", TensorProto.FLOAT, [1, k, 6]))
    meta = {p.key: p for p in model.metadata_props}
    meta["end2end"].value = "True"
    onnx.save(model, str(dst))


@pytest.fixture(scope="module")
def end2end_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("e2e") / "yolo11n-e2e.onnx"
    build_end2end(model_path, dst)
    return dst


def test_end2end_output_is_decoded(shared: Path, detector: Detector, end2end_model: Path) -> None:
    e2e = Detector(end2end_model, threads=2)
    assert e2e.end2end and not detector.end2end
    assert e2e.backend.output_shape == [1, 300, 6]
    for image in ("bus.jpg", "zidane.jpg"):
        frame = cv2.imread(str(shared / "data/images" / image))
        want, got = detector.detect(frame, REF_CFG), e2e.detect(frame, REF_CFG)
        assert len(got) == len(want) > 0
        assert (iou_matrix(want.xyxy, got.xyxy).max(axis=1) > 0.99).all()
    for _, frame in vtest_frames(shared, every=200):
        assert abs(len(e2e.detect(frame, REF_CFG)) - len(detector.detect(frame, REF_CFG))) <= 1


def test_unreadable_model_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=r"broken\.onnx"):
        Detector(bad)
    with pytest.raises(ModelError, match="not found"):
        Detector(tmp_path / "missing.onnx")


def test_bad_frame_is_rejected(detector: Detector) -> None:
    with pytest.raises(ValueError, match="BGR image"):
        detector.detect(np.zeros((10, 10), np.uint8), REF_CFG)


def test_timing_is_per_thread(model_path: Path) -> None:
    """Cameras share one Detector: each thread reads its own last timing, not another camera's."""
    detector = Detector(model_path, threads=1)
    frame = np.zeros((352, 640, 3), np.uint8)
    tiled = DetectConfig(mode="tiled", tiles=TileConfig(scale=2.0, overlap=0.25))
    seen: dict[str, float] = {}

    def other_camera() -> None:
        detector.detect(frame, tiled)
        seen["other"] = detector.last_timing["tiles"]

    detector.detect(frame, DetectConfig())
    t = threading.Thread(target=other_camera)
    t.start()
    t.join()
    assert seen["other"] > 1
    assert detector.last_timing["tiles"] == 1
