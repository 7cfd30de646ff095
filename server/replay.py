"""Replay a recording of MQTT traffic through the server's real ingest, forecast, decision and alert code.

On simulated event time, with a temporary SQLite database and no broker (`turnout replay`). The same
engine runs the backtest bank (`server.backtest`) and writes recordings (`turnout server --record`).

Recording (JSON lines, in time order)::

    {"ts": "<ISO 8601 UTC event time>", "topic": "turnout/v1/...", "payload": {...}, "retain": false}

Timeline (JSON lines): one line per evaluation tick and event, and one per alert that would be published::

    {"ts", "event", "attendance", "coverage", "forecast": {"p05", "p50", "p95"}, "p_reach_target",
     "decision", "reason"}
    {"ts", "alert": {...Alert payload...}}
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from server.clock import SimulatedClock
from server.db.models import RegistrationSummary
from server.db.session import Database
from server.live.evaluate import Evaluation
from server.live.hub import LiveHub
from server.migrations import upgrade
from server.recording import Recorded, RecordingError
from server.settings import Settings
from server.venues import load_file

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RegistrationsFigures:
    """A registrations summary as an import would leave it (the backtest bank uses these directly)."""

    total: int
    suspect: int


def timeline_line(ev: Evaluation) -> dict[str, Any]:
    f = ev.figures
    return {
        "ts": f["at"],
        "event": ev.event_id,
        "attendance": f["attendance"],
        "queue": f["queue"],
        "coverage": f["coverage"],
        "forecast": (
            {"p05": f["forecast_p05"], "p50": f["forecast_p50"], "p95": f["forecast_p95"]}
            if f["forecast_p50"] is not None
            else None
        ),
        "p_reach_target": f["p_reach_target"],
        "decision": ev.decision.state.value if ev.decision else None,
        "reason": f["reason"] or f["reasons"] or None,
    }


class ReplayEngine:
    """Replays recordings into fresh databases made from one migrated template (fast for a bank)."""

    def __init__(self, settings: Settings, workdir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="turnout-replay-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp else workdir  # type: ignore[arg-type]
        self.settings = settings.model_copy(
            update={"mqtt_enabled": False, "evaluate": True, "config_watch": False, "migrate_on_start": False}
        )
        self._template = self.workdir / "template.db"
        if not self._template.exists():
            db = Database(f"sqlite:///{self._template}")
            upgrade(db)
            db.dispose()
        self._runs = 0

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def run(
        self,
        setup: Path,
        recording: Iterable[Recorded],
        emit: Emit,
        *,
        event: str | None = None,
        registrations: Path | None = None,
        registrations_figures: RegistrationsFigures | None = None,
        tick_s: float = 60.0,
        until: datetime | None = None,
    ) -> None:
        """Replay ``recording`` for the venues/events of ``setup``; ticks every ``tick_s`` of event time."""
        self._runs += 1
        path = self.workdir / f"replay-{self._runs}.db"
        shutil.copyfile(self._template, path)
        db = Database(f"sqlite:///{path}")
        try:
            with db.session() as s:
                parsed = load_file(s, setup)
            event_ids = [e.id for e in parsed.events]
            if event is not None and event not in event_ids:
                raise RecordingError(f"event {event!r} is not in {setup} (it has: {', '.join(event_ids) or 'none'})")
            target_event = event or (event_ids[0] if len(event_ids) == 1 else None)
            if registrations is not None or registrations_figures is not None:
                if target_event is None:
                    raise RecordingError("registrations need --event (the setup file has several events)")
                self._registrations(db, target_event, registrations, registrations_figures)
            messages = iter(recording)
            first = next(messages, None)
            if first is None:
                return
            clock = SimulatedClock(first.ts)
            hub = LiveHub(self.settings.model_copy(update={"tick_s": tick_s}), db, clock)  # rules know the tick
            hub.alerts.set_publisher(lambda _topic, payload: emit({"ts": clock.now().isoformat(), "alert": json.loads(payload)}))
            hub.reload()
            step = timedelta(seconds=tick_s)
            next_tick = first.ts

            def tick_until(ts: datetime) -> None:
                nonlocal next_tick
                while next_tick <= ts:
                    clock.set(next_tick)
                    for ev in hub.tick(next_tick, flush=False):
                        if event is None or ev.event_id == event:
                            emit(timeline_line(ev))
                    next_tick += step

            for rec in _chain(first, messages):
                tick_until(rec.ts - timedelta(microseconds=1))
                clock.set(rec.ts)
                if rec.retain and rec.topic.endswith("/occupancy"):
                    hub.counters["retained_occupancy"] += 1  # occupancy is never retained: ignored, as live
                    continue
                hub.handle(rec.topic, rec.payload)
            if until is not None:
                tick_until(until)
            else:
                tick_until(next_tick)  # one last evaluation after the last message
        finally:
            db.dispose()
            path.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

    @staticmethod
    def _registrations(
        db: Database, event: str, path: Path | None, figures: RegistrationsFigures | None
    ) -> None:
        from server.registrations import import_file

        with db.session() as s:
            if path is not None:
                report = import_file(s, event, path)
                if not report.ok:
                    raise RecordingError(f"{path}: registrations not imported: {report}")
            elif figures is not None:
                s.merge(
                    RegistrationSummary(
                        event_id=event,
                        total=figures.total,
                        by_ticket_type={},
                        duplicates=0,
                        disposable=0,
                        burst=0,
                        suspect=figures.suspect,
                        suspect_share=figures.suspect / figures.total if figures.total else 0.0,
                        source_sha256="0" * 64,
                        source_name="backtest",
                    )
                )
                s.commit()


def _chain(first: Recorded, rest: Iterator[Recorded]) -> Iterator[Recorded]:
    yield first
    yield from rest
