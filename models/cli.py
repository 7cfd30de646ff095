"""`turnout models fetch | export | list`."""

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
