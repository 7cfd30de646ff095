"""Fetch official Ultralytics checkpoints and export them to ONNX (needs the `export` extra and internet).

The edge never imports this module: it only needs the resulting ``.onnx`` file and onnxruntime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

KNOWN = {
    "yolo11n": "yolo11n.pt",
    "yolo11s": "yolo11s.pt",
    "yolov8n": "yolov8n.pt",
    "yolov8s": "yolov8s.pt",
    "yolo26n": "yolo26n.pt",
}


class ExportUnavailable(RuntimeError):
    """Ultralytics is not installed; the message says how to install it."""


def _yolo():  # pragma: no cover - exercised only where ultralytics is installed
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ExportUnavailable(
            "exporting models needs Ultralytics (and torch): pip install 'turnout[export]'. "
            "Or copy a ready .onnx file into models/ and use --model."
        ) from None
    return YOLO


def export_onnx(checkpoint: str | Path, out_dir: Path, *, imgsz: int = 640, dynamic: bool = False) -> Path:
    """Export an Ultralytics checkpoint (a known name is downloaded first) to ``out_dir/NAME.onnx``.

    The export matches what the edge expects: opset 17, simplified, NMS not included, input
    ``images`` [1,3,imgsz,imgsz] (dynamic batch/height/width with ``dynamic``), metadata with names/imgsz.
    """
    yolo = _yolo()
    name = Path(str(checkpoint)).stem
    weights = KNOWN.get(str(checkpoint), str(checkpoint))
    model = yolo(weights)
    produced = Path(model.export(format="onnx", imgsz=imgsz, opset=17, simplify=True, dynamic=dynamic))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (f"{name}-dyn.onnx" if dynamic else f"{name}.onnx")
    shutil.move(str(produced), target)
    return target
