"""`turnout models fetch | export | list | quantize`."""

from __future__ import annotations

from pathlib import Path

import typer

from turnout.paths import REPO_ROOT, ModelNotFoundError, model_dirs, resolve_model

app = typer.Typer(no_args_is_help=True)


@app.command()
def fetch(
    name: str = typer.Argument("yolo11n", help="Official model name, e.g. yolo11n, yolov8n, yolo26n."),
    out_dir: Path = typer.Option(REPO_ROOT / "models", "--dir", help="Where to write NAME.onnx."),
    imgsz: int = typer.Option(640, help="Export input size."),
    dynamic: bool = typer.Option(False, help="Dynamic batch/height/width (batched tiles)."),
) -> None:
    """Download an official Ultralytics checkpoint and export it to ONNX (needs internet + export extra)."""
    from models.export import KNOWN, ExportUnavailable, export_onnx

    if name not in KNOWN and not Path(name).is_file():
        typer.secho(f"error: unknown model {name!r}; known: {', '.join(KNOWN)} (or a .pt path)", err=True, fg="red")
        raise typer.Exit(2)
    try:
        path = export_onnx(name, out_dir, imgsz=imgsz, dynamic=dynamic)
    except ExportUnavailable as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")


@app.command("list")
def list_models(name: str = typer.Argument(None, help="Resolve this model name or path.")) -> None:
    """Show where models are searched and which one a name resolves to."""
    for d in model_dirs():
        found = sorted(p.name for p in d.glob("*.onnx")) if d.is_dir() else []
        typer.echo(f"{d}: {', '.join(found) if found else '(none)'}")
    try:
        typer.echo(f"resolved: {resolve_model(name)}")
    except ModelNotFoundError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


@app.command()
def quantize(
    config: Path = typer.Option(..., "--config", help="Edge config (its model and the camera)."),
    camera: str = typer.Option(..., "--camera", help="Camera whose frames calibrate and check the model."),
    count: int = typer.Option(..., "--count", help="True number of people in the camera's sections."),
    frames: int = typer.Option(8, "--frames", min=1, max=500, help="Calibration frames (spread over a file)."),
    out: Path = typer.Option(None, "--out", help="Where to write the int8 model (default models/NAME-int8.onnx)."),
    max_drop: float = typer.Option(0.02, "--max-drop", min=0.0, max=1.0, help="Largest allowed error increase."),
) -> None:
    """Post-training int8 quantization (NNCF) on the camera's own frames; refused when counts get worse.

    Prints the fp32 and int8 count errors; writes the model only when int8 is at most --max-drop (2 points)
    worse than fp32, else exits 2 without writing.
    """
    from edge.cli import _frames_for
    from edge.config import ConfigError, load_config
    from edge.sources import SourceError
    from models.quantize import QuantizeError, quantize_for_camera

    def fail(message: str) -> None:
        typer.secho(f"error: {message}", err=True, fg="red")
        raise typer.Exit(2)

    try:
        cfg = load_config(config)
        cam = cfg.camera(camera)
        path = resolve_model(cfg.model.path)
        images = _frames_for(cam, frames)
    except (ConfigError, ModelNotFoundError, SourceError) as exc:
        fail(str(exc))
    target = out or REPO_ROOT / "models" / f"{path.stem}-int8.onnx"
    try:
        res = quantize_for_camera(path, cfg.model, cam, images, count, target, max_drop)
    except QuantizeError as exc:
        fail(str(exc))
    typer.echo(
        f"count error on {len(images)} frames of {camera} (true count {count}): "
        f"fp32 {res.fp32_error:.1%}, int8 {res.int8_error:.1%}"
    )
    if res.written is None:
        fail(
            f"{target}: not written: int8 count error {res.int8_error:.1%} is worse than fp32 "
            f"{res.fp32_error:.1%} by more than {max_drop:.0%}"
        )
    typer.echo(f"wrote {res.written} (use it with model.runtime: openvino for int8 speed on x86 CPUs)")
