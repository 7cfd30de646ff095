"""`LiveHub`: live state + evaluator + persistence + broadcaster, with one visible lock discipline.

Locks, always taken in this order, never the other way round:

1. ``_tick_lock`` (re-entrant) serialises everything that *writes* decisions, alerts or configuration:
   `tick`, `override_decision`, `reload`. A request thread that reloads therefore never races a tick, and
   no decision step is lost or overwritten.
2. ``state.lock`` guards the in-memory live state; held only to ingest one message, to copy one snapshot
   (`server.live.snapshot.take`) or to store one result. Forecasts and decisions are computed on the
   immutable snapshot with no lock held (`server.live.evaluate`).

Ingest runs on the MQTT network thread and takes only ``state.lock``, so a slow tick never blocks it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.alerts import AlertBook
from server.clock import Clock, SystemClock
from server.db.models import EventSample
from server.db.session import Database
from server.decision import DecisionMemory, DecisionRules, DecisionState
from server.forecast import ArrivalShape, ForecastParams, ShapeBank, build_shapes, shape_from_series
from server.lease import Lease
from server.live import snapshot as snapshots
from server.live import store
from server.live.broadcast import Broadcaster
from server.live.evaluate import AlertSpec, EvalRules, Evaluation, decision_alert, evaluate, venue_alerts
from server.live.snapshot import EventSnapshot
from server.live.state import EventLive, LiveState, SeriesPoint, VenueLive
from server.live.view import live_json
from server.notify import Notifier
from server.recording import Recorder
from server.settings import Settings
from turnout.contract import AlertKind, Occupancy

log = logging.getLogger(__name__)


class LiveHub:
    """The live side of the server; see the module docstring for the lock order."""

    def __init__(self, settings: Settings, db: Database, clock: Clock | None = None) -> None:
        self.settings = settings
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.alerts = AlertBook()
        self.state = LiveState(self.clock)
        self.broadcast = Broadcaster()
        self.state.on_change(self.broadcast.notify)
        self.failures: Counter[str] = Counter()
        """Evaluation failures per event id (one bad event never stops the others)."""
        self._tick_lock = threading.RLock()
        self._last_flush = 0.0
        self._last_failure_log: dict[str, float] = {}
        self._config_fp: int | None = None
        self._link_up: bool | None = None  # the MQTT link; None: not managed here (camera alerts always on)
        self._link_since: datetime | None = None
        self._history_shapes: dict[str, tuple[ArrivalShape, ...]] = {}
        self.recorder: Recorder | None = None
        self.notifier: Notifier | None = None
        """Organizer notifications (set by `server.app.create_app`; replays and backtests send none)."""
        self.lease: Lease | None = None
        """The evaluator lease (set by `server.app.create_app`): only its holder evaluates. None: always."""
        if settings.record_file is not None:
            self.recorder = Recorder(settings.record_file, self.clock.now)

    # ---------------------------------------------------------------- state, for routers and tests
    @property
    def venues(self) -> dict[str, VenueLive]:
        return self.state.venues

    @property
    def events(self) -> dict[str, EventLive]:
        return self.state.events

    @property
    def counters(self) -> Counter[str]:
        return self.state.counters

    @property
    def _lock(self) -> threading.RLock:  # kept for routers that read venues directly
        return self.state.lock

    def event_ids(self) -> list[str]:
        with self.state.lock:
            return list(self.state.events)

    def handle(self, topic: str, raw: bytes) -> None:
        """Ingest one MQTT message (occupancy or status); recorded first when ``record_file`` is set."""
        if self.recorder is not None:
            self.recorder(topic, raw)
        self.state.handle(topic, raw)

    def observe(self, callback: Callable[[Occupancy], None]) -> None:
        self.state.observe(callback)

    def _notify(self) -> None:
        self.broadcast.notify()

    def set_link(self, up: bool) -> None:
        """The MQTT bridge reports its link. Camera stale/offline alerts wait while it is down and for
        ``stale_after_s`` after each (re)connect, so silence we could not hear raises no alert."""
        with self.state.lock:
            self._link_up = up
            self._link_since = self.clock.now() if up else None

    def _camera_alerts_due(self, now: datetime) -> bool:
        with self.state.lock:
            if self._link_up is None:
                return True
            if not self._link_up or self._link_since is None:
                return False
            return (now - self._link_since).total_seconds() >= self.settings.stale_after_s

    # ------------------------------------------------------------------------------ loading
    def reload(self) -> None:
        """(Re)load venues, events, registration totals, decisions, alerts and saved live state."""
        with self._tick_lock:
            with self.db.session() as s:
                venues, events = store.load(s, self.state)
                self._history_shapes = _past_event_shapes(s, events, self.clock.now())
                self.alerts.load(s)
                if self.notifier is not None:
                    self.notifier.load(s)
            with self.state.lock:
                self.state.venues, self.state.events = venues, events
                self.state.version += 1
        self._notify()

    # ------------------------------------------------------------------------------ reading
    def take(self, event_id: str, now: datetime | None = None) -> EventSnapshot:
        return snapshots.take(self.state, event_id, now or self.clock.now(), self.settings.stale_after_s)

    def snapshot(self, event_id: str) -> dict[str, Any]:
        """The live figures of one event (GET /api/v1/events/{id}/live). KeyError if unknown."""
        snap = self.take(event_id)
        alerts = [
            a
            for a in self.alerts.all()
            if a["active"] and not a["acknowledged"] and (a["event"] == event_id or a["venue"] == snap.event.venue_id)
        ]
        if self.notifier is not None:
            alerts = [
                {**a, "deliveries": [d.model_dump(mode="json") for d in self.notifier.log(a["id"])]} for a in alerts
            ]
        return live_json(snap, alerts, self.settings.rate_window_s)

    def listen(self, event_id: str | None = None, heartbeat_s: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        ids = (lambda: [event_id]) if event_id else self.event_ids
        return self.broadcast.listen(ids, self.snapshot, heartbeat_s)

    def rules(self, snap: EventSnapshot) -> EvalRules:
        ev, st = snap.event, self.settings
        decision = None
        if ev.overflow_capacity is not None:
            decision = DecisionRules(
                capacity=ev.capacity,
                threshold=ev.overflow_threshold or 1.0,
                doors_open=ev.doors_open,
                deadline=ev.overflow_deadline,
                hold_s=st.decision_hold_s,
                needed_hold_s=min(st.needed_hold_s, st.decision_hold_s),
                cancel_max_risk=st.cancel_max_risk,
                needed_min_probability=st.needed_min_probability,
                min_fitted_points=st.min_fitted_points,
                min_share_in=st.min_share_in_for_decision,
                cancel_not_before=st.cancel_not_before,
                start=ev.start,
                final_call_s=st.tick_s,
            )
        doors_min = (ev.doors_open - ev.start).total_seconds() / 60.0
        return EvalRules(
            shapes=_shapes(tuple(map(tuple, st.arrival_curve)), doors_min, self._history_shapes.get(ev.venue_id, ())),
            params=ForecastParams(
                fit_sigma=st.forecast_fit_sigma,
                future_sigma=st.forecast_future_sigma,
                rate_sigma=st.forecast_rate_sigma,
                smooth_min=st.forecast_smooth_min,
                prior_base_weight=st.registrations_prior_weight,
            ),
            show_up=st.expected_show_up,
            show_up_spread=st.show_up_spread,
            min_live_coverage=st.min_live_coverage,
            decision=decision,
        )

    # --------------------------------------------------------------------------------- tick
    def tick(self, now: datetime | None = None, flush: bool | None = None) -> list[Evaluation]:
        """Evaluate forecasts, decisions and alerts; write series; save live state when due.

        Each event is evaluated in its own guard: a failure is counted, logged (at most once a minute per
        event) and the other events go on.
        """
        results: list[Evaluation] = []
        with self._tick_lock:
            now = now or self.clock.now()
            with self.db.session() as s:
                if self.settings.config_watch:
                    fp = store.config_fingerprint(s)
                    if self._config_fp is not None and fp != self._config_fp:
                        self.reload()  # changed outside this process (`turnout server load`, an import)
                    self._config_fp = fp
                if self.settings.mqtt_shared_group:
                    store.merge_saved(s, self.state)
                if self._may_evaluate(s):
                    camera_alerts = self._camera_alerts_due(now)
                    venues_done: set[str] = set()
                    for eid in self.event_ids():
                        if self.lease is not None and not self.lease.valid():
                            break  # this tick outlived the lease: a new holder may be evaluating
                        try:
                            result = self._evaluate_event(s, eid, now, camera_alerts, venues_done)
                        except Exception as exc:
                            s.rollback()
                            self._failed(eid, exc)
                            continue
                        if result is not None:
                            results.append(result)
                due = time.monotonic() - self._last_flush >= self.settings.flush_interval_s
                if flush or (flush is None and due):
                    self.flush(s)
        self._notify()
        return results

    def _may_evaluate(self, s: Session) -> bool:
        """Whether this process evaluates this tick: `evaluate` set and, with a lease, holding it. A process
        that just took the lease first loads the decision memory, series and alerts its predecessor saved;
        one that does not hold it mirrors decisions and alerts (what its API shows)."""
        if not self.settings.evaluate:
            return False
        if self.lease is None:
            return True
        held, fresh = self.lease.renew()
        if fresh or not held:
            store.load_decisions(s, self.state, series=fresh)
            self.alerts.load(s)
        else:
            self._adopt_foreign_decisions(s)
        return held

    def _adopt_foreign_decisions(self, s: Session) -> bool:
        """The holder takes over decisions another process saved since its own last save: an operator
        override (or a hand-back to automatic) sent to a process without the lease. True if any."""
        saved = store.saved_decision_keys(s)
        with self.state.lock:
            foreign = [
                eid
                for eid, event in self.state.events.items()
                if eid in saved and saved[eid] != store.decision_key(event.decision)
            ]
        if foreign:
            store.adopt_decisions(s, self.state, foreign)
            self.alerts.load(s)  # the other process published the override's alert: not again from here
            log.info("decision of %s changed by another process (operator override): adopted", ", ".join(foreign))
        return bool(foreign)

    def _failed(self, event_id: str, exc: Exception) -> None:
        self.failures[event_id] += 1
        last = self._last_failure_log.get(event_id, 0.0)
        if time.monotonic() - last >= 60.0:
            self._last_failure_log[event_id] = time.monotonic()
            log.error("evaluation of event %s failed (%d so far): %r", event_id, self.failures[event_id], exc)

    def _active(self, event: EventLive, now: datetime) -> bool:
        info = event.info
        return info.doors_open - timedelta(hours=1) <= now <= info.start + timedelta(hours=6)

    def _evaluate_event(
        self, s: Session, event_id: str, now: datetime, camera_alerts: bool, venues_done: set[str]
    ) -> Evaluation | None:
        with self.state.lock:
            event = self.state.events.get(event_id)
            if event is None or not self._active(event, now):
                return None
        snap = self.take(event_id, now)
        result = evaluate(snap, self.rules(snap))
        fc = result.forecast.as_dict() if result.forecast else None
        with self.state.lock:  # overrides hold the tick lock too: nothing changed the decision since `take`
            changed = result.decision is not None and (result.decision != event.decision or event.decision is None)
            event.decision = result.decision
            event.decision_figures = result.figures
            event.forecast = fc
            if not event.history or now - event.history[-1].ts >= timedelta(seconds=10):
                event.history.append(SeriesPoint(now, snap.attendance, snap.queue, round(snap.coverage, 4)))
        if event.last_sample is None or now - event.last_sample >= timedelta(seconds=self.settings.series_interval_s):
            store.write_sample(
                s,
                replace(snap, forecast=fc),
                fc,
                result.decision.state.value if result.decision else None,
                self.settings.series_interval_s,
                self.settings.retention_days,
            )
            event.last_sample = now
        overridden = False
        if changed and result.decision is not None:
            saved = store.saved_decision_keys(s).get(event_id) if self.lease is not None else None
            if saved is not None and saved != store.decision_key(snap.decision):
                store.adopt_decisions(s, self.state, [event_id])  # an override landed during this evaluation
                self.alerts.load(s)
                overridden = True
            else:
                store.save_decision(s, event_id, result.decision, result.figures)
        specs = [a for a in result.alerts if not (overridden and a.kind == AlertKind.OVERFLOW_DECISION)]
        if snap.event.venue_id not in venues_done:  # one active event per venue raises the venue's alerts
            venues_done.add(snap.event.venue_id)
            specs += venue_alerts(snap, camera_alerts)
        for spec in specs:
            self._raise(s, spec, now)
        return result

    def _raise(self, s: Session, spec: AlertSpec, now: datetime) -> None:
        self.alerts.raise_or_update(s, **vars(spec), now=now)

    def flush(self, s: Session) -> None:
        """Save changed section readings and camera states (what a restart reloads)."""
        store.flush(s, self.state)
        self._last_flush = time.monotonic()

    # ---------------------------------------------------------------------------- override
    def override_decision(self, event_id: str, state: DecisionState | None, user: str) -> DecisionMemory:
        """Operator override (frozen at ``state``); ``None`` returns the decision to automatic.

        Holds the tick lock, so an evaluation running now cannot write its result over the override. The
        alert carries the figures evaluated now, not those of an earlier tick.
        """
        with self._tick_lock:
            now = self.clock.now()
            snap = self.take(event_id, now)
            figures = evaluate(replace(snap, decision=None), self.rules(snap)).figures
            old = snap.decision or DecisionMemory(DecisionState.undecided, now)
            new = DecisionMemory(old.state, now) if state is None else DecisionMemory(state, now, True, user)
            with self.state.lock:
                event = self.state.events[event_id]
                event.decision = new
                event.decision_figures = figures
            with self.db.session() as s:
                # decision and alert in one commit: a holder that saw the decision without its alert would
                # publish the same alert again (it adopts saved decisions and reloads alerts every tick)
                store.save_decision(s, event_id, new, figures, by=user, commit=False)
                if new.state != DecisionState.undecided:
                    spec = decision_alert(snap.event, new, figures, override_by=user)
                else:  # withdrawn by hand: the earlier decision alert must not stay active
                    spec = decision_alert(snap.event, new, figures, override_by=user, withdrawn=True)
                if spec is not None and (new.state != DecisionState.undecided or state is not None):
                    self._raise(s, spec, now)
                s.commit()
        self._notify()
        return new


def _shapes(
    curve: tuple[tuple[float, float], ...], doors_min: float, history: tuple[ArrivalShape, ...]
) -> ShapeBank:
    return _shape_cache(curve, round(doors_min, 1), history)


_CACHE: dict[tuple[Any, ...], ShapeBank] = {}


def _shape_cache(
    curve: tuple[tuple[float, float], ...], doors_min: float, history: tuple[ArrivalShape, ...]
) -> ShapeBank:
    key = (curve, doors_min, tuple(h.name for h in history))
    shapes = _CACHE.get(key)
    if shapes is None:
        if len(_CACHE) > 64:
            _CACHE.clear()
        shapes = _CACHE[key] = ShapeBank(build_shapes(curve, doors_min, history=history))
    return shapes


def _past_event_shapes(s: Session, events: dict[str, EventLive], now: datetime) -> dict[str, tuple[ArrivalShape, ...]]:
    """Arrival shapes of each venue's past events (series from doors-open to the start), newest 10."""
    out: dict[str, list[ArrivalShape]] = {}
    past = sorted((e.info for e in events.values() if e.info.start < now), key=lambda e: e.start, reverse=True)
    for e in past:
        if len(out.get(e.venue_id, [])) >= 10:
            continue
        span = (e.start - e.doors_open).total_seconds()
        if span <= 0:
            continue
        rows = s.execute(
            select(EventSample.ts, EventSample.attendance).where(
                EventSample.event_id == e.id, EventSample.ts >= e.doors_open, EventSample.ts <= e.start
            )
        ).all()
        shape = shape_from_series(f"event:{e.id}", (((ts - e.doors_open).total_seconds() / span, a) for ts, a in rows), 0.0)
        if shape is not None:
            out.setdefault(e.venue_id, []).append(shape)
    return {k: tuple(v) for k, v in out.items()}
