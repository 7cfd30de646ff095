"""`turnout report --event ID [--format html|pdf|csv] [--out PATH]`: the post-event report from the database.

Exit codes: 0 written, 1 the report could not be made (PDF libraries missing), 2 bad usage or unknown event;
the database's own exit codes as for `turnout server` (65, 69).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class ReportFormat(StrEnum):
    html = "html"
    pdf = "pdf"
    csv = "csv"


def register(root: typer.Typer) -> None:
    root.command("report")(report)


def report(
    event: str = typer.Option(..., "--event", help="Event id."),
    fmt: ReportFormat = typer.Option(ReportFormat.html, "--format", help="html (self-contained), pdf or csv."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default: report-EVENT.FORMAT here; - for stdout)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Settings YAML (default: $TURNOUT_CONFIG; env wins)."),
) -> None:
    """Write an event's report: attendance and forecast, decisions, show-up, seating map, cameras, alerts."""
    from sqlalchemy import func, select

    from server.cli import _database
    from server.db.models import EventSample, utcnow
    from server.report import render
    from server.report.gather import UnknownEvent, gather
    from server.report.pdf import PdfUnavailable

    db = _database(config)
    try:
        with db.session() as s:
            last = s.scalar(select(func.max(EventSample.ts)).where(EventSample.event_id == event))
            # a replayed or simulated event's clock may run ahead of the wall clock: its data says how far it got
            now = max(utcnow(), last) if last is not None else utcnow()
            try:
                data = gather(s, event, now)
            except UnknownEvent as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(2) from None
    finally:
        db.dispose()
    try:
        body = render(data, fmt.value)
    except PdfUnavailable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if out is not None and str(out) == "-":
        typer.get_binary_stream("stdout").write(body)
        return
    path = out or Path(f"report-{event}.{fmt.value}")
    path.write_bytes(body)
    state = "final" if data.final else "PROVISIONAL (the event has not started)"
    typer.echo(f"wrote {path} ({len(body):,} bytes, {state})")
