"""`turnout server`, `turnout registrations ...`, `turnout users ...`, `turnout tokens ...`.

Server modules are imported inside the commands, so an edge-only install (no FastAPI/SQLAlchemy) still
runs `turnout edge ...`.

Exit codes: 1 the command failed (message says why), 2 bad settings or usage, `EXIT_DB_CORRUPT` (65) the
database is not usable (not a database, damaged, or at a schema revision this version does not know),
`EXIT_DB_UNREACHABLE` (69) the database cannot be reached. Each is one line naming the file or URL; the
shipped systemd unit does not restart on 2, 65 or 69 (``RestartPreventExitStatus``).
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from server.db.session import Database
    from server.settings import Settings

ConfigOpt = typer.Option(None, "--config", "-c", help="Settings YAML (default: $TURNOUT_CONFIG; env wins).")

server_app = typer.Typer(help="Run the attendance server and manage its database.", no_args_is_help=False)
registrations_app = typer.Typer(help="Import an event's registrations.", no_args_is_help=True)
users_app = typer.Typer(help="Users of the API and dashboard.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
chart_app = typer.Typer(help="The venue's seating chart and the seats each camera sees.", no_args_is_help=True)
server_app.add_typer(chart_app, name="chart")

EXIT_DB_CORRUPT = 65  # EX_DATAERR
EXIT_DB_UNREACHABLE = 69  # EX_UNAVAILABLE


def register(root: typer.Typer) -> None:
    """Add the server's commands to the root `turnout` command (imports stay lazy)."""
    root.add_typer(server_app, name="server", help="Run the attendance server (`turnout server`), migrate, load.")
    root.add_typer(registrations_app, name="registrations", help="Import registrations (CSV/JSON).")
    root.add_typer(users_app, name="users", help="Create, disable and enable users (viewer/operator/admin).")
    root.add_typer(tokens_app, name="tokens", help="Create, list and revoke API tokens.")


def _settings(config: Path | None) -> Settings:
    try:
        from server.settings import SettingsError, load_settings
    except ModuleNotFoundError as exc:  # pragma: no cover - edge-only install
        typer.echo(f"the server is not installed ({exc.name} missing): pip install 'turnout[server]'", err=True)
        raise typer.Exit(2) from None
    try:
        return load_settings(config)
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _database(config: Path | None, wait_s: float = 0.0) -> Database:
    return open_database(_settings(config), wait_s)


def open_database(settings: Settings, wait_s: float = 0.0) -> Database:
    """Connect and migrate, or exit with one line naming the file or URL (65 unusable, 69 unreachable).

    An unreachable database is retried for ``wait_s`` seconds first (a server starting before its
    PostgreSQL).
    """
    import logging
    import sqlite3

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # before alembic is imported
    from alembic.util.exc import CommandError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

    from server.db.session import Database
    from server.migrations import upgrade

    try:
        u = make_url(settings.database_url)
    except ArgumentError as exc:
        typer.echo(f"database_url: {exc}", err=True)
        raise typer.Exit(2) from None
    where = (
        f"database file {u.database}"
        if u.get_backend_name() == "sqlite"
        else f"database {u.render_as_string(hide_password=True)}"
    )
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db = Database(settings.database_url, settings.database_schema)
        except OSError as exc:  # the SQLite file's folder cannot be created
            typer.echo(f"{where}: cannot be opened ({exc.strerror or exc})", err=True)
            raise typer.Exit(EXIT_DB_UNREACHABLE) from None
        try:
            upgrade(db)
            return db
        except OperationalError as exc:
            db.dispose()
            reason = _first_line(exc)
            if "malformed" in reason or "not a database" in reason:
                typer.echo(f"{where}: not usable ({reason}); restore it from a backup", err=True)
                raise typer.Exit(EXIT_DB_CORRUPT) from None
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            typer.echo(f"{where}: cannot be reached ({reason})", err=True)
            raise typer.Exit(EXIT_DB_UNREACHABLE) from None
        except (DatabaseError, sqlite3.DatabaseError) as exc:
            db.dispose()
            reason = _first_line(exc)
            typer.echo(f"{where}: not usable ({reason}); restore it from a backup", err=True)
            raise typer.Exit(EXIT_DB_CORRUPT) from None
        except CommandError as exc:
            db.dispose()
            typer.echo(f"{where}: schema not known to this version of Turnout ({exc}); upgrade Turnout", err=True)
            raise typer.Exit(EXIT_DB_CORRUPT) from None


def _first_line(exc: Exception) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@server_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    host: str = typer.Option("127.0.0.1", help="Listen address (0.0.0.0 for all interfaces)."),
    port: int = typer.Option(8000, help="HTTP port."),
    log_level: str = typer.Option("info"),
    db_wait_s: float = typer.Option(30.0, "--db-wait-s", help="Wait this long for an unreachable database."),
    record: Path | None = typer.Option(
        None, "--record", help="Append live MQTT traffic to this file in the `turnout replay` format."
    ),
) -> None:
    """Run the server (API, dashboard, MQTT ingest) until stopped."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    import uvicorn

    from server.app import create_app

    settings = _settings(config)
    if record is not None:
        settings.record_file = record
    open_database(settings, db_wait_s).dispose()  # one clear line and exit code instead of a startup traceback
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@server_app.command("migrate")
def migrate(config: Path | None = ConfigOpt) -> None:
    """Create or upgrade the database schema (also done on server start)."""
    db = _database(config)  # first: it quiets alembic's start-up logging
    from server.migrations import current

    typer.echo(f"database at revision {current(db)}")


@server_app.command("load")
def load(
    file: Path = typer.Argument(..., help="Venue/event YAML (see deploy/venue-tulsa.yaml)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Create or update venues and events from a YAML file."""
    from server.venues import VenueFileError, load_file

    db = _database(config)
    with db.session() as s:
        try:
            parsed = load_file(s, file)
        except VenueFileError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    typer.echo(f"loaded {len(parsed.venues)} venue(s), {len(parsed.events)} event(s) from {file}")


@registrations_app.command("import")
def registrations_import(
    file: Path = typer.Argument(..., help="CSV or JSON export of the ticketing system."),
    event: str = typer.Option(..., "--event", help="Event id."),
    fmt: str = typer.Option(None, "--format", help="csv or json (default: from the extension)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Replace an event's registrations with FILE (atomic; prints bad rows and imports nothing if any)."""
    import json

    from server.registrations import ImportError_, import_file

    db = _database(config)
    with db.session() as s:
        try:
            report = import_file(s, event, file, fmt)
        except ImportError_ as exc:
            typer.echo(f"{file}: {exc}", err=True)
            raise typer.Exit(1) from None
    if not report.ok:
        for err in report.errors:
            typer.echo(f"{file}: {err}", err=True)
        more = report.error_count - len(report.errors)
        if more > 0:
            typer.echo(f"{file}: ... and {more} more bad rows", err=True)
        typer.echo(f"{file}: {report.error_count} bad row(s) of {report.rows}; nothing imported", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(report.summary, indent=2))


@users_app.command("create")
def users_create(
    name: str = typer.Argument(...),
    role: str = typer.Option("viewer", help="viewer, operator or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    no_password: bool = typer.Option(False, "--no-password", help="Token-only user (no dashboard login)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Create a user; the password is asked for (or read from stdin) and stored as a scrypt hash."""
    from server.auth import AuthError, Role, create_user

    try:
        role_ = Role(role)
    except ValueError:
        typer.echo(f"unknown role {role!r}: use viewer, operator or admin", err=True)
        raise typer.Exit(2) from None
    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not no_password:
        password = getpass.getpass(f"password for {name}: ")
        if password != getpass.getpass("again: "):
            typer.echo("passwords differ", err=True)
            raise typer.Exit(1)
    db = _database(config)
    with db.session() as s:
        try:
            create_user(s, name, role_, password)
        except AuthError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    typer.echo(f"created user {name} ({role_.value})")


@tokens_app.command("create")
def tokens_create(
    user: str = typer.Option(..., "--user", help="User the token acts as (its role applies)."),
    name: str = typer.Option("api", help="A label for the token."),
    expires_days: float = typer.Option(30.0, "--expires-days", help="Days until the token expires (max 3650)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Create an API token; it is printed once (only its hash is stored). Tokens expire (default 30 days)."""
    from datetime import timedelta

    from server.auth import AuthError, create_token

    db = _database(config)
    with db.session() as s:
        try:
            token = create_token(s, user, name, ttl=timedelta(days=expires_days))
        except AuthError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    user: str | None = typer.Option(None, "--user", help="Only this user's tokens."),
    all_: bool = typer.Option(False, "--all", help="Also revoked and expired tokens."),
    config: Path | None = ConfigOpt,
) -> None:
    """List tokens: id, user, label, created, expires, state (never the token itself)."""
    from server.auth import list_tokens
    from server.db.models import utcnow

    db = _database(config)
    now = utcnow()
    with db.session() as s:
        rows = list_tokens(s, user)
    typer.echo(f"{'id':>6}  {'user':<20} {'label':<12} {'created':<20} {'expires':<20} state")
    for t, u in rows:
        state = "revoked" if t.revoked else "expired" if t.expires_at and t.expires_at < now else "active"
        if u.disabled and state == "active":
            state = "user disabled"
        if state != "active" and not all_:
            continue
        created = t.created_at.strftime("%Y-%m-%d %H:%M")
        expires = t.expires_at.strftime("%Y-%m-%d %H:%M") if t.expires_at else "never"
        typer.echo(f"{t.id:>6}  {u.name:<20} {t.name:<12} {created:<20} {expires:<20} {state}")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: int | None = typer.Argument(None, help="Token id (see `turnout tokens list`)."),
    user: str | None = typer.Option(None, "--user", help="Revoke every token of this user instead."),
    config: Path | None = ConfigOpt,
) -> None:
    """Revoke a token by id, or all of a user's tokens; they stop working at once."""
    from server.auth import AuthError, revoke_token_id, revoke_user_tokens

    if (token_id is None) == (user is None):
        typer.echo("give a token id or --user NAME", err=True)
        raise typer.Exit(2)
    db = _database(config)
    with db.session() as s:
        try:
            if user is not None:
                typer.echo(f"revoked {revoke_user_tokens(s, user)} token(s) of {user}")
            else:
                assert token_id is not None
                done = revoke_token_id(s, token_id)
                typer.echo(f"revoked token {token_id}" if done else f"token {token_id} was already revoked")
        except AuthError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None


def _set_disabled(name: str, disabled: bool, config: Path | None) -> None:
    from server.auth import AuthError, set_user_disabled

    db = _database(config)
    with db.session() as s:
        try:
            set_user_disabled(s, name, disabled)
        except AuthError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    typer.echo(f"{'disabled' if disabled else 'enabled'} user {name}")


@users_app.command("disable")
def users_disable(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    """Disable a user: sign-in refused and every token of the user refused at once."""
    _set_disabled(name, True, config)


@users_app.command("enable")
def users_enable(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    """Enable a disabled user again (its unexpired, unrevoked tokens work again)."""
    _set_disabled(name, False, config)


@chart_app.command("import")
def chart_import(
    file: Path = typer.Argument(..., help="Seating chart, CSV or JSON (docs/seatmaps.md)."),
    venue: str = typer.Option(..., "--venue", help="Venue id (loaded before with `turnout server load`)."),
    fmt: str = typer.Option(None, "--format", help="csv or json (default: from the content)."),
    y_up: bool = typer.Option(False, "--y-up", help="The chart's y axis grows upwards."),
    config: Path | None = ConfigOpt,
) -> None:
    """Replace the venue's seating chart with FILE (atomic: prints every bad seat and changes nothing)."""
    import json

    from server.seatmap.chart import ChartError
    from server.seatmap.store import import_chart

    if not file.is_file():
        typer.echo(f"{file}: file not found", err=True)
        raise typer.Exit(1)
    db = _database(config)
    started = time.perf_counter()
    with db.session() as s:
        try:
            summary = import_chart(s, venue, file.read_bytes(), fmt=fmt, source_name=file.name, y_up=y_up)
        except ChartError as exc:
            for err in exc.errors:
                typer.echo(f"{file}: {err}", err=True)
            if exc.total > len(exc.errors):
                typer.echo(f"{file}: ... and {exc.total - len(exc.errors)} more", err=True)
            typer.echo(f"{file}: {exc.total} problem(s); nothing imported", err=True)
            raise typer.Exit(1) from None
    summary["import_s"] = round(time.perf_counter() - started, 3)
    typer.echo(json.dumps(summary, indent=2))


@chart_app.command("project")
def chart_project(
    venue: str = typer.Option(..., "--venue", help="Venue whose chart is projected."),
    pairs: Path = typer.Option(..., "--pairs", help='JSON: [{"plan": [x, y], "image": [u, v]}, ...] (4 or more).'),
    frame: str = typer.Option(..., "--frame", help="Camera image size, WIDTHxHEIGHT (e.g. 1920x1080)."),
    min_seat_px: float = typer.Option(12.0, "--min-seat-px", help="Smaller seats are unseen."),
    out: Path | None = typer.Option(None, "--out", help="Write the layout (sections with seat maps) here."),
    config: Path | None = ConfigOpt,
) -> None:
    """Project the chart into one camera image from point pairs and print what it sees (sends nothing;
    the calibration view or PUT /api/v1/calibration/{venue}/{camera}/seatmap sends it to the edge)."""
    import json

    from server.seatmap.project import PointPairs, ProjectionError, fit_homography, layout_sections, project_seats
    from server.seatmap.store import load_chart

    try:
        w, h = (int(v) for v in frame.lower().split("x"))
        items = json.loads(pairs.read_text())
        pp = PointPairs.of([(p["plan"], p["image"]) for p in items])
    except (ValueError, TypeError, KeyError, OSError) as exc:
        typer.echo(f"--frame WIDTHxHEIGHT and --pairs [{{plan, image}}, ...] expected: {exc}", err=True)
        raise typer.Exit(2) from None
    db = _database(config)
    with db.session() as s:
        chart = load_chart(s, venue)
    if chart is None:
        typer.echo(f"venue {venue!r} has no seat chart: turnout server chart import FILE --venue {venue}", err=True)
        raise typer.Exit(1)
    try:
        proj = project_seats(chart, {None: fit_homography(pp, w, h)}, w, h, min_seat_px)
    except ProjectionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    sections = layout_sections(chart, proj)
    if out is not None:
        out.write_text(json.dumps({"coordinates": "pixels", "sections": sections}, indent=1))
    typer.echo(json.dumps({**proj.summary(), "sections": {x["id"]: x["seats"] for x in sections}}, indent=2))
