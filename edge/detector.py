"""Person detection with onnxruntime or OpenVINO (edge/runtimes.py) on any Ultralytics detection export (no torch needed).

Two output layouts are understood:

* ``(1, 4 + C, N)``: YOLOv8/YOLO11-style raw head (boxes cx,cy,w,h in input pixels, class scores already
  sigmoid) that needs NMS; done with ``cv2.dnn.NMSBoxes``.
* ``(1, K, 6)``: NMS-free end-to-end head (x1,y1,x2,y2,score,class in input pixels).

Pre-processing reproduces Ultralytics' predictor exactly (letterbox: INTER_LINEAR resize, centered 114 padding,
same rounding; RGB; /255), so counts match its predictor on the same ONNX file (tests/edge/test_detector.py).
"""

from __future__ import annotations

import ast
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from shapely.geometry.base import BaseGeometry

from edge.config import DetectConfig, ModelConfig
from edge.detections import Detections
from edge.runtimes import ModelError, Precision, Provider, Runtime, open_with_fallback

if TYPE_CHECKING:
    from edge.gating import TileGate
    from edge.scheduler import InferenceScheduler

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was fitted into the model input: ``input = source * gain + (pad_x, pad_y)``."""

    gain: float
    pad_x: int
    pad_y: int

    def to_source(self, xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map (N,4) boxes from model-input pixels back to source pixels, clipped to the image."""
        out = xyxy.astype(np.float32, copy=True)
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.gain).clip(0, width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.gain).clip(0, height)
        return out


def letterbox(
    img: np.ndarray, new_shape: tuple[int, int], *, auto: bool = False, stride: int = 32
) -> tuple[np.ndarray, Letterbox]:
    """Ultralytics' ``LetterBox(center=True)``: keep aspect, resize (INTER_LINEAR), pad with 114.

    ``auto`` pads only up to a multiple of ``stride`` (what the predictor does for dynamic-shape models).
    """
    h, w = img.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, Letterbox(r, left, top)


def to_blob(images: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 HWC images of one size -> float32 NCHW RGB in 0..1 (one C++ pass, no Python copies)."""
    return cv2.dnn.blobFromImages(images, scalefactor=1 / 255.0, swapRB=True)


def decode_raw(pred: np.ndarray, person: int, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """One image of a ``(4 + C, N)`` head -> person boxes xyxy (input pixels) and scores after NMS.

    Like Ultralytics' ``non_max_suppression(classes=[person])``: a candidate is a person when its best class
    is person and that score exceeds ``conf``.
    """
    scores = pred[4 + person]
    cand = np.flatnonzero(scores > conf)
    if cand.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    cls = pred[4:, cand]
    keep = cls.argmax(axis=0) == person
    cand, s = cand[keep], scores[cand[keep]]
    cx, cy, w, h = pred[0, cand], pred[1, cand], pred[2, cand], pred[3, cand]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return nms(xyxy, s, iou, max_det)


def decode_end2end(pred: np.ndarray, person: int, conf: float, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """One image of a ``(K, 6)`` NMS-free head (x1,y1,x2,y2,score,class) -> person boxes and scores."""
    keep = (pred[:, 5].round().astype(np.int64) == person) & (pred[:, 4] > conf)
    rows = pred[keep]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det]
    return rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS (``cv2.dnn.NMSBoxes``), highest scores first, at most ``max_det`` boxes."""
    if len(xyxy) == 0:
        return xyxy.reshape(0, 4).astype(np.float32), scores.astype(np.float32)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float64)
    idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), 0.0, iou), np.int64)
    idx = idx.reshape(-1)[:max_det]
    return xyxy[idx].astype(np.float32), scores[idx].astype(np.float32)


def _meta_literal(meta: dict[str, str], key: str, path: Path) -> object:
    try:
        return ast.literal_eval(meta[key])
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{path}: metadata {key!r} is not readable ({meta[key][:60]!r}): {exc}") from None


class Detector:
    """A person detector on one ONNX file (onnxruntime or OpenVINO, edge/runtimes.py), shared by camera threads."""

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 2,
        runtime: Runtime = "onnxruntime",
        precision: Precision = "fp32",
        providers: tuple[Provider, ...] | list[Provider] = ("cpu",),
        device: str = "CPU",
        max_batch: int | None = None,
        fallback: str | None = None,
    ) -> None:
        self.path = Path(model_path)
        self.max_batch = max_batch  # most images per inference call (None: all of a frame's tiles at once)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        backend, self.degraded = open_with_fallback(  # degraded: why the CPU fallback runs (None: as configured)
            self.path, runtime=runtime, precision=precision, providers=providers, device=device, threads=threads,
            fallback=fallback,
        )
        self.backend = backend
        self.runtime = f"{backend.runtime} ({backend.detail})"
        self.name = self.path.stem
        self.threads = threads
        self.input_name = backend.input_name
        meta = backend.metadata
        self.stride = int(meta.get("stride", 32))
        n, _c, h, w = backend.input_shape
        self.dynamic = not all(isinstance(d, int) for d in (n, h, w))
        self.batch_dynamic = not isinstance(n, int)
        if "imgsz" in meta:
            imgsz = _meta_literal(meta, "imgsz", self.path)
            imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
            self.input_size: tuple[int, int] = (int(imgsz[0]), int(imgsz[1]))
        elif isinstance(h, int) and isinstance(w, int):
            self.input_size = (h, w)
        else:
            raise ModelError(f"{self.path}: dynamic input shape and no 'imgsz' metadata; cannot pick a size")
        if not self.dynamic and (h, w) != self.input_size:
            self.input_size = (h, w)
        self.names = self._names(meta)
        persons = [i for i, name in self.names.items() if name.lower() == "person"]
        if not persons:
            raise ModelError(f"{self.path}: no 'person' class in the model's names ({len(self.names)} classes)")
        self.person = persons[0]
        self.end2end = self._layout(backend.output_shape, meta)
        self._local = threading.local()
        self.scheduler: InferenceScheduler | None = None

    @classmethod
    def from_config(cls, model_path: Path, model: ModelConfig) -> Detector:
        """The detector the config's ``model`` block asks for (runtime, precision, providers, device, threads,
        max_batch)."""
        return cls(
            model_path,
            threads=model.threads,
            runtime=model.runtime,
            precision=model.precision,
            providers=model.providers,
            device=model.device,
            max_batch=model.max_batch,
            fallback=model.fallback,
        )

    def _names(self, meta: dict[str, str]) -> dict[int, str]:
        if "names" not in meta:
            return {0: "person"}  # exports without metadata: assume COCO order
        names = _meta_literal(meta, "names", self.path)
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not isinstance(names, dict):
            raise ModelError(f"{self.path}: metadata 'names' must be a dict or list, got {type(names).__name__}")
        return {int(k): str(v) for k, v in names.items()}

    def _layout(self, shape: list[int | str], meta: dict[str, str]) -> bool:
        """True for an end-to-end ``(B, K, 6)`` head, False for a raw ``(B, 4 + C, N)`` head."""
        if len(shape) != 3:
            raise ModelError(f"{self.path}: unsupported output shape {shape}; expected (1, 4+C, N) or (1, K, 6)")
        if meta.get("end2end", "").lower() == "true" or shape[2] == 6:
            return True
        if isinstance(shape[1], int) and shape[1] != 4 + len(self.names) and "names" in meta:
            raise ModelError(
                f"{self.path}: output has {shape[1]} rows but the metadata names {len(self.names)} classes "
                f"(expected {4 + len(self.names)}); is this a detection model?"
            )
        return False

    # ------------------------------------------------------------------------------------- inference
    def start_scheduler(self) -> InferenceScheduler:
        """Send every `infer` call (all cameras) through one fair queue from now on (edge/scheduler.py)."""
        from edge.scheduler import InferenceScheduler

        if self.scheduler is None:
            self.scheduler = InferenceScheduler(self._infer, self.max_batch if self.batch_dynamic else 1)
        return self.scheduler

    def stop_scheduler(self) -> None:
        """Back to direct calls (after the cameras have stopped)."""
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run the model on an NCHW float32 batch, through the device's scheduler when one is started."""
        if self.scheduler is not None:
            return self.scheduler.infer(blob)
        return self._infer(blob)

    def _infer(self, blob: np.ndarray) -> np.ndarray:
        """Run the session on an NCHW float32 batch; loops when the model has a fixed batch of 1."""
        if blob.shape[0] == 1 or self.batch_dynamic:
            return self.backend.run(blob)
        outs = [self.backend.run(blob[i : i + 1]) for i in range(len(blob))]
        return np.concatenate(outs, axis=0)

    def blob(self, images: list[np.ndarray]) -> np.ndarray:
        """Like `to_blob`, into this thread's reused buffer (grown only when a call needs more room).

        The view is valid until this thread's next call; one buffer per thread, as cameras share a Detector.
        """
        h, w = images[0].shape[:2]
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < len(images) or buf.shape[2:] != (h, w):
            buf = self._local.buf = np.empty((len(images), 3, h, w), np.float32)
        out = buf[: len(images)]
        for i, img in enumerate(images):
            out[i] = img.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB (uint8 -> float32)
        out *= np.float32(1 / 255.0)
        return out

    def decode(self, pred: np.ndarray, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, np.ndarray]:
        """One image's raw output -> person boxes (model-input pixels) and scores."""
        if self.end2end:
            return decode_end2end(pred, self.person, conf, max_det)
        return decode_raw(pred, self.person, conf, iou, max_det)

    def detect(
        self,
        frame_bgr: np.ndarray,
        cfg: DetectConfig,
        roi: BaseGeometry | None = None,
        gate: TileGate | None = None,
        now: float = 0.0,
    ) -> Detections:
        """People in one BGR frame, full-frame or tiled as ``cfg.mode`` says; boxes in frame pixels.

        ``roi`` (frame pixels, e.g. `Layout.region`): tiled mode runs only the tiles near it. ``gate`` (the
        camera's `TileGate`, tiled mode): tiles that barely changed since their last inference before ``now``
        (the frame's time, seconds) reuse their detections.
        """
        if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            shape = None if frame_bgr is None else frame_bgr.shape
            raise ValueError(f"expected a BGR image (H, W, 3), got shape {shape}")
        if cfg.mode == "tiled":
            from edge.tiling import detect_tiled

            dets, timing = detect_tiled(self, frame_bgr, cfg, roi, gate=gate, now=now)
        else:
            dets, timing = self._detect_full(frame_bgr, cfg)
        self._local.timing = timing
        return dets

    @property
    def last_timing(self) -> dict[str, float]:
        """Stage times (ms) and tile count of this thread's last `detect` call (cameras share a Detector)."""
        return getattr(self._local, "timing", {})

    def _detect_full(self, frame: np.ndarray, cfg: DetectConfig) -> tuple[Detections, dict[str, float]]:
        t0 = time.perf_counter()
        img, lb = letterbox(frame, self.input_size, auto=self.dynamic, stride=self.stride)
        blob = to_blob([img])
        t1 = time.perf_counter()
        out = self.infer(blob)
        t2 = time.perf_counter()
        xyxy, scores = self.decode(out[0], cfg.conf, cfg.iou, cfg.max_det)
        dets = Detections(lb.to_source(xyxy, frame.shape[1], frame.shape[0]), scores)
        t3 = time.perf_counter()
        timing = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        timing["tiles"] = 1
        return dets, timing
