"""The evaluator lease: of any number of server processes, the one holding it evaluates and publishes.

One row (``evaluator_lease``) holds the holder id, an expiry and a term. Every tick each evaluating process
tries one compare-and-set UPDATE: it succeeds when the row is its own or has expired, and then pushes the
expiry ``ttl_s`` ahead. Times come from the database's clock (one clock for all hosts), so host clocks may
differ. The term grows when the holder changes: a process that finds a term other than the one it last
held has been away and must reload the decision memory and alerts others wrote (`LiveHub` does this).

Works on SQLite and PostgreSQL (plain UPDATE and INSERT ... ON CONFLICT DO NOTHING). A process that stops
renewing (killed, frozen, cut off from the database) loses the lease ``ttl_s`` after its last renewal; a
graceful stop releases it at once. ``valid()`` tells, without I/O, whether the lease surely still holds:
a tick that runs longer than the lease stops evaluating rather than race a new holder.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy import Connection, case, literal_column, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import EvaluatorLease as Row
from server.db.session import Database
from server.settings import Settings

log = logging.getLogger(__name__)

SAFETY = 0.8
"""`valid()` trusts a renewal for this share of the lease (the rest covers the round trip and clock rates)."""


def holder_id(settings: Settings) -> str:
    """``evaluator_id``, else the MQTT client id (stable across restarts), else host-pid-random."""
    if settings.evaluator_id:
        return settings.evaluator_id
    if settings.mqtt_client_id or not settings.mqtt_shared_group:
        return settings.mqtt_session_id
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _db_now(conn: Connection) -> ColumnElement[float]:
    if conn.dialect.name == "postgresql":
        return literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)")


class Lease:
    """Holds or waits for the lease named ``name``; call `renew` once per tick."""

    def __init__(self, db: Database, holder: str, ttl_s: float, name: str = "evaluator") -> None:
        self.db, self.holder, self.ttl_s, self.name = db, holder, ttl_s, name
        self.held = False
        self.term: int | None = None
        self.takeovers = 0
        self._valid_until = 0.0

    def renew(self) -> tuple[bool, bool]:
        """Try to hold the lease for ``ttl_s`` more: (held now, newly taken: reload what others wrote)."""
        started = time.monotonic()
        try:
            with self.db.engine.begin() as conn:
                now = _db_now(conn)
                got = conn.execute(
                    update(Row)
                    .where(Row.name == self.name, or_(Row.holder == self.holder, Row.expires_at < now))
                    .values(
                        holder=self.holder,
                        expires_at=now + self.ttl_s,
                        term=case((Row.holder == self.holder, Row.term), else_=Row.term + 1),
                    )
                ).rowcount
                if not got:
                    got = self._insert(conn)
                term = conn.execute(select(Row.term).where(Row.name == self.name)).scalar_one() if got else None
        except Exception:  # the database is unreachable: nobody can prove they hold it, least of all us
            log.exception("evaluator lease: cannot renew")
            got, term = 0, None
        fresh = bool(got) and (not self.held or term != self.term)
        if got:
            self._valid_until = started + self.ttl_s * SAFETY
            if fresh:
                self.takeovers += 1
                log.warning("evaluator lease taken by %s (term %s): this process evaluates and publishes", self.holder, term)
        elif self.held:
            self._valid_until = 0.0
            log.warning("evaluator lease lost by %s: another process evaluates now", self.holder)
        self.held, self.term = bool(got), term if got else self.term
        return self.held, fresh

    def _insert(self, conn: Connection) -> int:
        """Create the row when there is none yet (the first server ever); 1 if this process made it."""
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(Row).values(name=self.name, holder=self.holder, expires_at=_db_now(conn) + self.ttl_s, term=1)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))  # rowcount: -1 on psycopg
        holder = conn.execute(select(Row.holder).where(Row.name == self.name)).scalar_one_or_none()
        return 1 if holder == self.holder else 0

    def valid(self) -> bool:
        """Whether the last renewal surely still holds (no I/O)."""
        return self.held and time.monotonic() < self._valid_until

    def release(self) -> None:
        """Give the lease up now (graceful stop), so another process takes over at its next tick."""
        if not self.held:
            return
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(Row).where(Row.name == self.name, Row.holder == self.holder).values(expires_at=0.0)
                )
        except Exception:
            log.exception("evaluator lease: cannot release")
        self.held, self._valid_until = False, 0.0

    def holder_now(self) -> tuple[str, float] | None:
        """(holder, seconds left) as the database says, for status pages and tests."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(Row.holder, Row.expires_at - _db_now(conn)).where(Row.name == self.name)).first()
        return (row[0], float(row[1])) if row else None
