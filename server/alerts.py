"""Alerts: stored, published retained on ``turnout/v1/{venue}/alerts/{kind}`` and acknowledged.

Every alert has a stable id (``{event}:overflow_decision``, ``{venue}:camera_stale:{camera}``, ...).
It is published only when its state or active flag changes, so a restart never re-sends it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import AlertChange, AlertRow
from turnout.contract import Alert, AlertKind, alert_topic

log = logging.getLogger(__name__)

Publisher = Callable[[str, bytes], None]
Listener = Callable[[dict[str, Any]], object]


def alert_id(kind: AlertKind, scope: str, subject: str | None = None) -> str:
    return f"{scope}:{kind.value}" + (f":{subject}" if subject else "")


def row_to_dict(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "venue": row.venue_id,
        "event": row.event_id,
        "kind": row.kind,
        "subject": row.subject,
        "state": row.state,
        "active": row.active,
        "severity": row.severity,
        "message": row.message,
        "figures": row.figures,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "acknowledged": row.acknowledged_at is not None,
        "acknowledged_at": row.acknowledged_at.isoformat() if row.acknowledged_at else None,
        "acknowledged_by": row.acknowledged_by,
    }


def _change(row: AlertRow, action: str, now: datetime, by: str | None = None) -> AlertChange:
    """The alert log's entry for ``row`` as it is now (the post-event report reads the log)."""
    return AlertChange(
        alert_id=row.id,
        venue_id=row.venue_id,
        event_id=row.event_id,
        kind=row.kind,
        subject=row.subject,
        ts=now,
        action=action,
        state=row.state,
        active=row.active,
        severity=row.severity,
        message=row.message,
        by=by,
    )


class AlertBook:
    """In-memory mirror of the alerts table; `raise_or_update` stores and publishes on change."""

    def __init__(self, publish: Publisher | None = None) -> None:
        self._publish = publish
        self._listener: Listener | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.published = 0

    def set_publisher(self, publish: Publisher | None) -> None:
        self._publish = publish

    def set_listener(self, listener: Listener | None) -> None:
        """Called with the stored alert after each published change (organizer notifications); must not block."""
        self._listener = listener

    def load(self, session: Session) -> None:
        with self._lock:
            self._rows = {row.id: row_to_dict(row) for row in session.scalars(select(AlertRow))}

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._rows.get(alert_id)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._rows.values())

    def raise_or_update(
        self,
        session: Session,
        *,
        id: str,
        venue: str,
        event: str | None,
        kind: AlertKind,
        subject: str | None,
        state: str,
        active: bool,
        severity: str,
        message: str,
        figures: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Store the alert; publish it when new or when its state/active flag changed. True if published."""
        with self._lock:
            known = self._rows.get(id)
        if known is None and not active:
            return False
        if known is not None and known["state"] == state and known["active"] == active:
            return False
        row = session.get(AlertRow, id)
        if row is None:
            row = AlertRow(id=id, venue_id=venue, kind=kind.value, subject=subject, created_at=now)
            session.add(row)
        row.event_id = event
        row.state = state
        row.active = active
        row.severity = severity
        row.message = message
        row.figures = figures
        row.updated_at = now
        if active:
            row.acknowledged_at = None
            row.acknowledged_by = None
        action = "raised" if known is None or (active and not known["active"]) else "changed" if active else "cleared"
        session.add(_change(row, action, now))
        session.commit()
        with self._lock:
            self._rows[id] = row_to_dict(row)
        payload = Alert(
            id=id,
            venue=venue,
            event=event,
            kind=kind,
            state=state,
            severity=severity,  # type: ignore[arg-type]
            ts=now,
            message=message,
            figures=figures,
        )
        if self._publish is not None:
            try:
                self._publish(alert_topic(venue, kind.value), payload.to_json())
                self.published += 1
            except Exception:  # the alert is stored; it is re-published on the next change
                log.exception("could not publish alert %s", id)
        log.info("alert %s: %s (%s)", id, state, message)
        if self._listener is not None:
            try:
                self._listener(self._rows[id])
            except Exception:  # notifications never stop alerts
                log.exception("alert listener failed for %s", id)
        return True

    def acknowledge(self, session: Session, alert_id: str, user: str, now: datetime) -> dict[str, Any] | None:
        row = session.get(AlertRow, alert_id)
        if row is None:
            return None
        if row.acknowledged_at is None:
            row.acknowledged_at = now
            row.acknowledged_by = user
            session.add(_change(row, "acknowledged", now, user))
            session.commit()
        with self._lock:
            self._rows[alert_id] = row_to_dict(row)
        return self._rows[alert_id]
