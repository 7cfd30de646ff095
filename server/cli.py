"""`turnout server`, `turnout registrations ...`, `turnout users ...`, `turnout tokens ...`.

Server modules are imported inside the commands, so an edge-only install (no FastAPI/SQLAlchemy) still
runs `turnout edge ...`.
"""

from __future__ import annotations

import getpass
import sys
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


def register(root: typer.Typer) -> None:
    """Add the server's commands to the root `turnout` command (imports stay lazy)."""
    root.add_typer(server_app, name="server", help="Run the attendance server (`turnout server`), migrate, load.")
    root.add_typer(registrations_app, name="registrations", help="Import registrations (CSV/JSON).")
    root.add_typer(users_app, name="users", help="Create users (viewer/operator/admin).")
    root.add_typer(tokens_app, name="tokens", help="Create API tokens.")


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


def _database(config: Path | None) -> Database:
    from server.db.session import Database
    from server.migrations import upgrade

    settings = _settings(config)
    db = Database(settings.database_url, settings.database_schema)
    upgrade(db)
    return db


@server_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    host: str = typer.Option("127.0.0.1", help="Listen address (0.0.0.0 for all interfaces)."),
    port: int = typer.Option(8000, help="HTTP port."),
    log_level: str = typer.Option("info"),
) -> None:
    """Run the server (API, dashboard, MQTT ingest) until stopped."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    import uvicorn

    from server.app import create_app

    app = create_app(_settings(config))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@server_app.command("migrate")
def migrate(config: Path | None = ConfigOpt) -> None:
    """Create or upgrade the database schema (also done on server start)."""
    from server.migrations import current

    db = _database(config)
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
    config: Path | None = ConfigOpt,
) -> None:
    """Create an API token; it is printed once (only its hash is stored)."""
    from server.auth import AuthError, create_token

    db = _database(config)
    with db.session() as s:
        try:
            token = create_token(s, user, name)
        except AuthError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    typer.echo(token)
