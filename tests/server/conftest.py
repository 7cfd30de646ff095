"""Server fixtures: a database on SQLite *and* PostgreSQL, settings, an app with a simulated clock."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.clock import SimulatedClock
from server.settings import Settings, load_settings
from tests.conftest import Broker, free_port

PG_URL = os.environ.get("TURNOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class DbTarget:
    url: str
    schema: str | None
    kind: str


def _pg_reachable(url: str) -> bool:
    try:
        eng = sa.create_engine(url)
        with eng.connect() as c:
            c.execute(sa.text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL database: the machine's (127.0.0.1:5432/test) or a throwaway cluster."""
    if _pg_reachable(PG_URL):
        yield PG_URL
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail(
            f"PostgreSQL not reachable at {PG_URL} and no initdb found: install the Debian package "
            "'postgresql' (scripts/setup.sh test) or set TURNOUT_TEST_PG"
        )
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="turnout-pg-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        base.chmod(0o755)
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=60)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        if not _pg_reachable(url):
            pytest.fail(f"throwaway PostgreSQL did not start; see {base / 'log'}")
        yield url
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"], capture_output=True, timeout=60
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DbTarget]:
    """An empty database on each backend (a fresh SQLite file; a fresh schema on PostgreSQL)."""
    if request.param == "sqlite":
        yield DbTarget(f"sqlite:///{tmp_path / 'turnout.db'}", None, "sqlite")
        return
    url = request.getfixturevalue("pg_server")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield DbTarget(url, schema, "postgresql")
    with eng.begin() as c:
        # a session the test left open (a killed server's backend not yet gone, a leaked connection) would
        # block DROP SCHEMA forever: end the other sessions on this schema, then drop with a lock timeout
        c.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
        c.execute(
            sa.text(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_namespace n ON n.oid = l.objid "
                "WHERE n.nspname = :s AND l.pid <> pg_backend_pid() "
                "UNION SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = :s AND l.pid <> pg_backend_pid()"
            ),
            {"s": schema},
        )
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture
def sqlite_target(tmp_path: Path) -> DbTarget:
    return DbTarget(f"sqlite:///{tmp_path / 'turnout.db'}", None, "sqlite")


def make_settings(
    db: DbTarget, broker: Broker | None = None, venues: list[str] | None = None, **kw: object
) -> Settings:
    base: dict[str, object] = {
        "database_url": db.url,
        "database_schema": db.schema,
        "mqtt_enabled": broker is not None,
        "mqtt_venues": venues,
        "tick_s": 60.0,
    }
    if broker is not None:
        base["mqtt_url"] = broker.url
    base.update(kw)
    return load_settings(None, **base)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2020, 6, 20, 19, 0, tzinfo=UTC))
