"""`turnout replay` and `turnout backtest`: the server's decision code on recordings and a simulated bank.

Exit codes: 0 done, 1 the backtest missed a target (``--check``), 2 bad input (names the line and problem).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from server.settings import Settings


def register(root: typer.Typer) -> None:
    root.command("replay")(replay)
    root.command("backtest")(backtest)


def _settings(path: Path | None) -> Settings:
    """Server settings for an offline run (the decision rules matter; the database is a temporary one)."""
    from server.settings import SettingsError, load_settings

    try:
        return load_settings(path, database_url="sqlite:///unused.db")
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _quiet() -> None:
    """Alerts go to the timeline (replay) or the summary (backtest), not to the log."""
    for name in ("server", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def replay(
    recording: Path = typer.Argument(..., help="Recording: one MQTT message per line (JSON), in time order."),
    setup: Path = typer.Option(..., "--setup", help="Venue/event YAML (as for `turnout server load`)."),
    registrations: Path | None = typer.Option(None, help="Registrations CSV/JSON to import for --event."),
    event: str | None = typer.Option(None, help="Only this event's timeline (needed with --registrations)."),
    settings_file: Path | None = typer.Option(None, "--settings", help="Server settings YAML (decision rules)."),
    out: Path | None = typer.Option(None, help="Write the timeline here (default: standard output)."),
    tick_s: float = typer.Option(60.0, help="Evaluate every this many seconds of event time."),
) -> None:
    """Replay a recording through the server's ingest, forecast, decision and alerts (no broker)."""
    _quiet()
    from server.recording import RecordingError, read_recording
    from server.replay import ReplayEngine
    from server.venues import VenueFileError

    settings = _settings(settings_file)
    if not recording.is_file():
        typer.echo(f"{recording}: file not found", err=True)
        raise typer.Exit(2)
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    engine = ReplayEngine(settings)
    try:
        with recording.open(encoding="utf-8") as fh:
            messages = list(read_recording(fh))  # the whole file is checked before anything is replayed
        engine.run(
            setup,
            messages,
            lambda line: sink.write(json.dumps(line, separators=(",", ":")) + "\n"),
            event=event,
            registrations=registrations,
            tick_s=tick_s,
        )
    except RecordingError as exc:
        typer.echo(f"{recording}: {exc}", err=True)
        raise typer.Exit(2) from None
    except VenueFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    finally:
        engine.close()
        if out:
            sink.close()


def backtest(
    events: int = typer.Option(1000, min=1, help="Simulated events in the bank."),
    seed: int = typer.Option(2020, help="Seed of the bank (same seed, same events)."),
    jobs: int = typer.Option(2, min=1, help="Worker processes."),
    settings_file: Path | None = typer.Option(None, "--settings", help="Server settings YAML (decision rules)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON here."),
    check: bool = typer.Option(False, help="Exit 1 when a target is missed."),
) -> None:
    """Run a seeded bank of simulated events through `turnout replay`'s code and print the decision record."""
    _quiet()
    from server.backtest import meets_targets, report, run_bank, summarise
    overrides = _settings(settings_file).model_dump(exclude={"database_url"}, exclude_unset=True)
    t0 = time.monotonic()
    outcomes = run_bank(events, seed, jobs, overrides)
    summary = summarise(outcomes)
    for line in report(summary, outcomes):
        typer.echo(line)
    typer.echo(f"ran in {time.monotonic() - t0:.0f} s with {jobs} worker(s), seed {seed}")
    if json_out:
        json_out.write_text(json.dumps(summary.as_dict(), indent=2, default=str))
    if check and not meets_targets(summary):
        raise typer.Exit(1)
