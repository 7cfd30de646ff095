"""Where Turnout looks for models, shared sample data and its own state."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "yolo11n"


class ModelNotFoundError(FileNotFoundError):
    """No ONNX file for the requested model; the message lists every place that was searched."""


def model_dirs() -> list[Path]:
    """Folders searched for ``NAME.onnx``, in order: ``$TURNOUT_MODEL_DIR``, ``./models``, the repo's models/,
    ``$TURNOUT_SHARED/models``, ``../shared/models`` (beside the repo)."""
    dirs: list[Path] = []
    if env := os.environ.get("TURNOUT_MODEL_DIR"):
        dirs.append(Path(env))
    dirs += [Path.cwd() / "models", REPO_ROOT / "models"]
    if env := os.environ.get("TURNOUT_SHARED"):
        dirs.append(Path(env) / "models")
    dirs.append(REPO_ROOT.parent / "shared" / "models")
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


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariableError(ValueError):
    """A ``${VAR}`` in a config names an environment variable that is not set (and has no ``:-default``)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"environment variable {name} is not set")
        self.name = name


def expand_vars(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset ``${VAR}`` raises `UnsetVariableError`.

    ``TURNOUT_SHARED`` defaults to `shared_dir()` (../shared beside the repo) when that exists.
    """
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        if name == "TURNOUT_SHARED" and (shared := shared_dir()) is not None:
            return str(shared)
        raise UnsetVariableError(name)

    return _VAR.sub(sub, text)


def expand_config_vars(data: object, where: str = "") -> object:
    """Expand ``${VAR}`` in every string of parsed YAML; an unset variable raises `UnsetVariableError` whose
    message names the variable and the field (e.g. ``cameras.0.source``)."""
    if isinstance(data, dict):
        return {k: expand_config_vars(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_config_vars(v, f"{where}.{i}") for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        try:
            return expand_vars(data)
        except UnsetVariableError as exc:
            raise UnsetVariableError(
                exc.name,
                f"{where or '(top level)'}: environment variable {exc.name} is not set (used as ${{{exc.name}}} in "
                f"{data!r}); export it or write ${{{exc.name}:-default}}",
            ) from None
    return data


def state_dir() -> Path:
    """Writable folder for queues and counters: ``$TURNOUT_STATE_DIR`` or ``./var``."""
    return Path(os.environ.get("TURNOUT_STATE_DIR", Path.cwd() / "var"))
