"""Where Turnout looks for models, shared sample data and its own state."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "yolo11n"


class ModelNotFoundError(FileNotFoundError):
    """No ONNX file for the requested model; the message lists every place that was searched."""


def model_dirs() -> list[Path]:
    """Folders searched for ``NAME.onnx``, in order: ``$TURNOUT_MODEL_DIR``, ``./models``, the repo's models/."""
    dirs: list[Path] = []
    if env := os.environ.get("TURNOUT_MODEL_DIR"):
        dirs.append(Path(env))
    dirs += [Path.cwd() / "models", REPO_ROOT / "models"]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def resolve_model(name_or_path: str | None = None) -> Path:
    """Find a model: explicit value (``--model``/config), then ``$TURNOUT_MODEL``, then models/.

    A value that names an existing file is used as is; otherwise it is a model name looked up as
    ``NAME.onnx`` (and ``NAME-recon.onnx``) in `model_dirs()`.
    """
    wanted = name_or_path or os.environ.get("TURNOUT_MODEL") or DEFAULT_MODEL
    tried: list[str] = []
    path = Path(wanted).expanduser()
    if path.suffix == ".onnx" or os.sep in wanted:
        if path.is_file():
            return path
        tried.append(str(path))
        stem = path.stem
    else:
        stem = wanted
    for d in model_dirs():
        for candidate in (d / f"{stem}.onnx", d / f"{stem}-recon.onnx"):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise ModelNotFoundError(
        f"model {wanted!r} not found; looked in: {', '.join(tried)}. "
        f"Fetch it with `turnout models fetch {stem}` or pass --model PATH / set TURNOUT_MODEL."
    )


def shared_dir() -> Path | None:
    """``$TURNOUT_SHARED`` (real sample data and models; set by .ci/run), or ../shared beside the repo."""
    if env := os.environ.get("TURNOUT_SHARED"):
        return Path(env)
    candidate = REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def state_dir() -> Path:
    """Writable folder for queues and counters: ``$TURNOUT_STATE_DIR`` or ``./var``."""
    return Path(os.environ.get("TURNOUT_STATE_DIR", Path.cwd() / "var"))
