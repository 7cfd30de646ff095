"""The one `turnout` command; each package contributes its own subcommands."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import get_args

import typer
from typer.core import TyperArgument, TyperOption

from edge.cli import app as edge_app
from models.cli import app as models_app
from server.cli import register as register_server
from server.replay_cli import register as register_replay
from server.report.cli import register as register_report


def _help_metavar(param: TyperOption | TyperArgument, ctx: object) -> str | None:
    """Help shows flags bare and values as metavars (``PATH``, ``TEXT``, ``[a|b]``), not ``<str>`` type tags."""
    if param.metavar is not None:
        return param.metavar
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return None
    desc = param.type_descriptor
    if desc.is_choice:
        label = "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    elif desc.is_path:
        label = "PATH"
    else:
        names = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "datetime": "DATETIME"}
        annotation = get_args(desc.annotation)[0] if desc.is_list and get_args(desc.annotation) else desc.annotation
        label = names.get(getattr(annotation, "__name__", ""), "VALUE")
    return label + ("..." if param.nargs != 1 else "")


TyperOption.display_type_rich = _help_metavar  # type: ignore[method-assign]
TyperArgument.display_type_rich = _help_metavar  # type: ignore[method-assign]


def package_version() -> str:
    """The installed distribution's version (pyproject.toml)."""
    try:
        return version("turnout")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


app = typer.Typer(
    name="turnout",
    help="Turnout: live crowd counts from arena cameras, attendance against registrations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(edge_app, name="edge", help="Run, check and calibrate an edge device.")
app.add_typer(models_app, name="models", help="Fetch and export detection models.")
register_server(app)
register_replay(app)
register_report(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"turnout {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Turnout: live crowd counts from arena cameras, attendance against registrations."""


@app.command()
def demo(
    video: str = typer.Option(None, help="Your own video for the real edge (default: shared vtest.avi)."),
    speed: float = typer.Option(60.0, help="Time compression of the simulated event (60 = 1 h in 1 min)."),
    port: int = typer.Option(8000, help="Dashboard/API port."),
    duration: float = typer.Option(None, help="Stop after this many seconds (default: until Ctrl-C)."),
    notify: list[str] = typer.Option(
        None, help="Apprise URL that gets the demo event's alerts (repeatable), e.g. mailto://... or json://host/hook."
    ),
    report_dir: Path = typer.Option(
        None, "--report-dir", help="On stopping, write the demo event's report (PDF, HTML, CSV) into this folder."
    ),
) -> None:
    """Bring up a whole venue: broker, server, a real edge and a simulated arena."""
    from turnout.demo import run_demo

    raise SystemExit(
        run_demo(video=video, speed=speed, port=port, duration=duration, notify=notify or None, report_dir=report_dir)
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
