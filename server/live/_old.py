"""Live state of every venue and event, fed by MQTT ingest, evaluated every tick.

One `LiveHub` per app (``app.state.hub``). Ingest runs on the MQTT network thread; the API and
server-sent events read `snapshot(event_id)`; `tick()` (every ``tick_s``) computes forecasts, the
overflow decision and alerts, writes the time series and saves the live state so a restarted server
continues where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.alerts import AlertBook, alert_id
from server.clock import Clock, SystemClock
from server.db.models import (
    Camera,
    Decision,
    Event,
    EventSample,
    RegistrationSummary,
    Section,
    SectionSample,
    SectionState,
    Venue,
)
from server.db.session import Database, upsert
from server.decision import DecisionMemory, DecisionRules, DecisionState, step
from server.forecast import Forecast, forecast_final
from server.settings import Settings
from server.venues import overflow_dict
from turnout.contract import AlertKind, CameraState, Occupancy, PayloadError, Status, decode, parse_topic

log = logging.getLogger(__name__)
MAX_NOTIFY_HZ = 5.0


@dataclass
class Reading:
    occupied: int
    people: int
    seats: int
    ts: datetime
    received: datetime


@dataclass
class CameraLive:
    id: str
    name: str = ""
    state: str = "unknown"  # unknown | online | degraded | offline (from status / messages)
    status_ts: datetime | None = None
    last_seen: datetime | None = None
    last_seq: int | None = None
    status_state: str | None = None  # state of the last status message (to drop exact repeats)


@dataclass
class SectionCfg:
    id: str
    name: str
    seats: int
    cameras: list[str]


@dataclass
class VenueLive:
    id: str
    name: str
    sections: dict[str, SectionCfg] = field(default_factory=dict)
    cameras: dict[str, CameraLive] = field(default_factory=dict)
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    dirty: set[tuple[str, str]] = field(default_factory=set)
    dirty_cameras: set[str] = field(default_factory=set)


@dataclass
class EventLive:
    id: str
    venue_id: str
    name: str
    doors_open: datetime
    start: datetime
    capacity: int
    expected_show_up: float | None
    overflow_name: str | None
    overflow_capacity: int | None
    overflow_deadline: datetime | None
    overflow_threshold: float | None
    registrations: int = 0
    suspect: int = 0
    suspect_share: float = 0.0
    decision: DecisionMemory | None = None
    decision_figures: dict[str, Any] = field(default_factory=dict)
    history: deque[tuple[datetime, int]] = field(default_factory=lambda: deque(maxlen=4000))
    last_sample: datetime | None = None


class LiveHub:
    """Thread-safe live state; see the module docstring."""

    def __init__(self, settings: Settings, db: Database, clock: Clock | None = None) -> None:
        self.settings = settings
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.alerts = AlertBook()
        self.venues: dict[str, VenueLive] = {}
        self.events: dict[str, EventLive] = {}
        self.counters: Counter[str] = Counter()
        self.version = 0
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._observers: list[Callable[[Occupancy], None]] = []
        self._last_flush = 0.0
        self._last_log = 0.0
        self._config_fp: int | None = None
        self._link_up: bool | None = None  # the MQTT link; None: not managed here (camera alerts always on)
        self._link_since: datetime | None = None

    def set_link(self, up: bool) -> None:
        """The MQTT bridge reports its link. Camera stale/offline alerts wait while it is down and for
        ``stale_after_s`` after each (re)connect, so silence we could not hear raises no alert."""
        with self._lock:
            self._link_up = up
            self._link_since = self.clock.now() if up else None

    def _camera_alerts_due(self, now: datetime) -> bool:
        with self._lock:
            if self._link_up is None:
                return True
            if not self._link_up or self._link_since is None:
                return False
            return (now - self._link_since).total_seconds() >= self.settings.stale_after_s

    # ------------------------------------------------------------------------------ loading
    def reload(self) -> None:
        """(Re)load venues, events, registration totals, decisions, alerts and saved live state."""
        with self.db.session() as s:
            venues: dict[str, VenueLive] = {}
            for v in s.scalars(select(Venue)):
                old = self.venues.get(v.id)
                live = VenueLive(v.id, v.name)
                if old is not None:
                    live.readings, live.dirty, live.dirty_cameras = old.readings, old.dirty, old.dirty_cameras
                venues[v.id] = live
            for sec in s.scalars(select(Section)):
                if sec.venue_id in venues:
                    venues[sec.venue_id].sections[sec.id] = SectionCfg(sec.id, sec.name, sec.seats, list(sec.cameras))
            for cam in s.scalars(select(Camera)):
                if cam.venue_id not in venues:
                    continue
                old_v = self.venues.get(cam.venue_id)
                old_c = old_v.cameras.get(cam.id) if old_v else None
                if old_c is not None:
                    old_c.name = cam.name
                    venues[cam.venue_id].cameras[cam.id] = old_c
                else:
                    venues[cam.venue_id].cameras[cam.id] = CameraLive(
                        cam.id, cam.name, cam.state, None, cam.last_seen, cam.last_seq
                    )
            for st in s.scalars(select(SectionState)):
                v = venues.get(st.venue_id)
                if v is not None and (st.section_id, st.camera_id) not in v.readings:
                    v.readings[(st.section_id, st.camera_id)] = Reading(
                        st.occupied, st.people, st.seats, st.ts, st.received_at
                    )
            summaries = {r.event_id: r for r in s.scalars(select(RegistrationSummary))}
            decisions = {d.event_id: d for d in s.scalars(select(Decision))}
            events: dict[str, EventLive] = {}
            for e in s.scalars(select(Event)):
                old_e = self.events.get(e.id)
                live_e = EventLive(
                    e.id,
                    e.venue_id,
                    e.name,
                    e.doors_open,
                    e.start,
                    e.capacity,
                    e.expected_show_up,
                    e.overflow_name,
                    e.overflow_capacity,
                    e.overflow_deadline,
                    e.overflow_threshold,
                )
                if old_e is not None:
                    live_e.history, live_e.last_sample = old_e.history, old_e.last_sample
                    live_e.decision, live_e.decision_figures = old_e.decision, old_e.decision_figures
                summary = summaries.get(e.id)
                if summary is not None:
                    live_e.registrations = summary.total
                    live_e.suspect = summary.suspect
                    live_e.suspect_share = summary.suspect_share
                d = decisions.get(e.id)
                if live_e.decision is None and d is not None:
                    live_e.decision = DecisionMemory(
                        DecisionState(d.state),
                        d.since,
                        d.frozen,
                        d.override_by,
                        DecisionState(d.candidate) if d.candidate else None,
                        d.candidate_since,
                    )
                    live_e.decision_figures = dict(d.figures or {})
                if not live_e.history:
                    for sample in s.scalars(
                        select(EventSample).where(EventSample.event_id == e.id).order_by(EventSample.ts)
                    ):
                        live_e.history.append((sample.ts, sample.attendance))
                        live_e.last_sample = sample.ts
                events[e.id] = live_e
            self.alerts.load(s)
        with self._lock:
            self.venues, self.events = venues, events
            self.version += 1
        self._notify()

    # ------------------------------------------------------------------------------- ingest
    def handle(self, topic: str, raw: bytes) -> None:
        """Ingest one MQTT message (occupancy or status). Never raises: bad input is counted and logged."""
        self.counters["received"] += 1
        try:
            venue_id, camera_id, kind = parse_topic(topic)
        except ValueError:
            self._reject("bad_topic", topic, "not a camera topic")
            return
        try:
            if kind == "occupancy":
                self._ingest_occupancy(venue_id, camera_id, decode(Occupancy, raw))
            elif kind == "status":
                self._ingest_status(venue_id, camera_id, decode(Status, raw))
            else:
                self.counters["ignored"] += 1
        except PayloadError as exc:
            self._reject("malformed", topic, str(exc))
        except Exception:  # a bug must not stop the ingest thread
            self.counters["errors"] += 1
            log.exception("ingest error on %s", topic)

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        self.counters[reason] += 1
        now = time.monotonic()
        if now - self._last_log > 5.0:
            self._last_log = now
            log.warning(
                "rejected message on %s (%s): %s [%d so far]", topic, reason, detail[:300], self.counters[reason]
            )

    def _ingest_occupancy(self, venue_id: str, camera_id: str, msg: Occupancy) -> None:
        if msg.venue != venue_id or msg.camera != camera_id:
            self._reject("malformed", f"{venue_id}/{camera_id}", "payload venue/camera differ from the topic's")
            return
        now = self.clock.now()
        with self._lock:
            venue = self.venues.get(venue_id)
            if venue is None:
                self.counters["unknown_venue"] += 1
                return
            cam = venue.cameras.get(camera_id)
            if cam is None:
                self._reject("unknown_camera", f"{venue_id}/{camera_id}", "camera not configured for venue")
                return
            if cam.last_seq is not None and msg.seq <= cam.last_seq:
                self.counters["duplicate_or_old"] += 1
                return
            cam.last_seq = msg.seq
            cam.last_seen = now
            if cam.state in ("unknown", CameraState.OFFLINE.value):
                cam.state = CameraState.ONLINE.value
            venue.dirty_cameras.add(camera_id)
            for sc in msg.sections:
                cfg = venue.sections.get(sc.id)
                if cfg is None or camera_id not in cfg.cameras:
                    self.counters["unknown_section"] += 1
                    continue
                occupied = min(sc.occupied, cfg.seats)
                venue.readings[(sc.id, camera_id)] = Reading(occupied, sc.people, sc.seats, msg.ts, now)
                venue.dirty.add((sc.id, camera_id))
            self.counters["accepted"] += 1
            self.version += 1
        for obs in self._observers:
            obs(msg)
        self._notify()

    def _ingest_status(self, venue_id: str, camera_id: str, msg: Status) -> None:
        if msg.venue != venue_id or msg.camera != camera_id:
            self._reject("malformed", f"{venue_id}/{camera_id}", "payload venue/camera differ from the topic's")
            return
        with self._lock:
            venue = self.venues.get(venue_id)
            cam = venue.cameras.get(camera_id) if venue else None
            if cam is None:
                self.counters["unknown_camera"] += 1
                return
            # In arrival order (the broker keeps it per topic): the edge's last will carries the ts of its
            # CONNECT, older than the `online` it sent after, yet it is the newer news. Only repeats drop.
            if cam.status_ts == msg.ts and cam.status_state == msg.state.value:
                self.counters["duplicate_or_old"] += 1
                return
            cam.status_ts, cam.status_state = msg.ts, msg.state.value
            cam.state = msg.state.value
            if msg.state != CameraState.OFFLINE:
                seen = min(msg.ts, self.clock.now())  # an old retained status is no sign of life now
                if cam.last_seen is None or seen > cam.last_seen:
                    cam.last_seen = seen
            assert venue is not None
            venue.dirty_cameras.add(camera_id)
            self.counters["status"] += 1
            self.version += 1
        self._notify()

    def observe(self, callback: Callable[[Occupancy], None]) -> None:
        """Call ``callback(message)`` after each accepted occupancy message is in the live state (benchmarks)."""
        self._observers.append(callback)

    # ----------------------------------------------------------------------------- figures
    def _camera_view(self, cam: CameraLive, now: datetime) -> dict[str, Any]:
        stale = cam.last_seen is None or (now - cam.last_seen).total_seconds() > self.settings.stale_after_s
        state = cam.state
        if state != CameraState.OFFLINE.value and stale and cam.last_seen is not None:
            state = "stale"
        return {
            "id": cam.id,
            "name": cam.name,
            "state": state,
            "last_seen": cam.last_seen.isoformat() if cam.last_seen else None,
            "last_seq": cam.last_seq,
            "stale": stale or state == CameraState.OFFLINE.value,
        }

    def _sections(self, venue: VenueLive, cams: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for cfg in venue.sections.values():
            chosen: tuple[str, Reading] | None = None
            for cid in cfg.cameras:
                r = venue.readings.get((cfg.id, cid))
                if r is not None and cid in cams and not cams[cid]["stale"]:
                    chosen = (cid, r)
                    break
            stale = chosen is None
            if chosen is None:  # nobody live: the freshest reading we have, marked stale
                known = [(cid, venue.readings[(cfg.id, cid)]) for cid in cfg.cameras if (cfg.id, cid) in venue.readings]
                chosen = max(known, key=lambda x: x[1].received) if known else None
            out.append(
                {
                    "id": cfg.id,
                    "name": cfg.name,
                    "seats": cfg.seats,
                    "occupied": chosen[1].occupied if chosen else 0,
                    "people": chosen[1].people if chosen else 0,
                    "camera": chosen[0] if chosen else None,
                    "cameras": cfg.cameras,
                    "stale": stale,
                    "updated": chosen[1].ts.isoformat() if chosen else None,
                }
            )
        return out

    def _figures(self, event: EventLive, now: datetime) -> dict[str, Any]:
        venue = self.venues.get(event.venue_id) or VenueLive(event.venue_id, event.venue_id)
        cams = {c.id: self._camera_view(c, now) for c in venue.cameras.values()}
        sections = self._sections(venue, cams)
        attendance = sum(s["occupied"] for s in sections)
        people = sum(s["people"] for s in sections)
        plausible = max(event.registrations - event.suspect, 0)
        fc = self._forecast(event, attendance, plausible, now)
        return {
            "cams": cams,
            "sections": sections,
            "attendance": attendance,
            "people": people,
            "plausible": plausible,
            "forecast": fc,
        }

    def _forecast(self, event: EventLive, attendance: int, plausible: int, now: datetime) -> Forecast | None:
        s = self.settings
        return forecast_final(
            attendance=attendance,
            now=now,
            start=event.start,
            curve=s.arrival_curve,
            spread=s.arrival_curve_spread,
            registrations=plausible or None,
            show_up=event.expected_show_up or s.expected_show_up,
            show_up_spread=s.show_up_spread,
        )

    def _rate(self, event: EventLive, attendance: int, now: datetime) -> float | None:
        window = timedelta(seconds=self.settings.rate_window_s)
        past = [(t, a) for t, a in event.history if now - window <= t < now]
        if not past:
            return None
        t0, a0 = past[0]
        minutes = (now - t0).total_seconds() / 60.0
        return round((attendance - a0) / minutes, 2) if minutes > 0 else None

    def snapshot(self, event_id: str) -> dict[str, Any]:
        """The live figures of one event (the JSON of GET /api/v1/events/{id}/live). KeyError if unknown."""
        now = self.clock.now()
        with self._lock:
            event = self.events[event_id]
            f = self._figures(event, now)
            rate = self._rate(event, f["attendance"], now)
            decision = event.decision
            decision_figures = dict(event.decision_figures)
        fc: Forecast | None = f["forecast"]
        attendance = f["attendance"]
        alerts = [
            a
            for a in self.alerts.all()
            if a["active"] and not a["acknowledged"] and (a["event"] == event_id or a["venue"] == event.venue_id)
        ]
        return {
            "event_id": event.id,
            "venue_id": event.venue_id,
            "event": {
                "name": event.name,
                "doors_open": event.doors_open.isoformat(),
                "start": event.start.isoformat(),
                "overflow": overflow_dict(event),
            },
            "attendance": attendance,
            "people": f["people"],
            "capacity": event.capacity,
            "fill_ratio": round(attendance / event.capacity, 4) if event.capacity else None,
            "registrations": event.registrations,
            "registrations_plausible": f["plausible"],
            "registrations_suspect_share": round(event.suspect_share, 4),
            "show_up_ratio": round(attendance / event.registrations, 5) if event.registrations else None,
            "arrival_rate_per_min": rate,
            "forecast": fc.as_dict() if fc else None,
            "decision": {
                "state": decision.state.value if decision else DecisionState.undecided.value,
                "since": decision.since.isoformat() if decision else None,
                "frozen": decision.frozen if decision else False,
                "override_by": decision.override_by if decision else None,
                "candidate": decision.candidate.value if decision and decision.candidate else None,
                "figures": decision_figures,
            },
            "sections": f["sections"],
            "cameras": list(f["cams"].values()),
            "alerts": alerts,
            "ts": now.isoformat(),
        }

    def event_ids(self) -> list[str]:
        with self._lock:
            return list(self.events)

    # ------------------------------------------------------------------------------ listen
    def _notify(self) -> None:
        for loop, ev in list(self._waiters):
            if not ev.is_set():
                try:
                    loop.call_soon_threadsafe(ev.set)
                except RuntimeError:  # loop closed
                    self._waiters.remove((loop, ev))

    async def listen(self, event_id: str | None = None, heartbeat_s: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        """Yield snapshots on every change (at most 5 per second), and at least every ``heartbeat_s``.

        With ``event_id`` only that event's snapshots; otherwise every event's, one after the other.
        """
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        entry = (loop, ev)
        self._waiters.append(entry)
        try:
            ev.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout=heartbeat_s)
                ev.clear()
                ids = [event_id] if event_id else self.event_ids()
                for eid in ids:
                    try:
                        yield self.snapshot(eid)
                    except KeyError:
                        continue
                await asyncio.sleep(1.0 / MAX_NOTIFY_HZ)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # -------------------------------------------------------------------------------- tick
    def tick(self, now: datetime | None = None, flush: bool | None = None) -> None:
        """Evaluate forecasts, decisions and alerts; write series; save live state when due."""
        with self._tick_lock:
            now = now or self.clock.now()
            with self.db.session() as s:
                fp = _config_fingerprint(s)
                if self._config_fp is not None and fp != self._config_fp:
                    self.reload()  # changed outside this process (`turnout server load`, registrations import)
                self._config_fp = fp
                if self.settings.mqtt_shared_group:
                    self.merge_saved(s)
                if self.settings.evaluate:
                    for eid in self.event_ids():
                        self._evaluate_event(s, eid, now)
                    self._evaluate_venues(s, now)
                due = time.monotonic() - self._last_flush >= self.settings.flush_interval_s
                if flush or (flush is None and due):
                    self.flush(s)
            self._notify()

    def _active(self, event: EventLive, now: datetime) -> bool:
        return event.doors_open - timedelta(hours=1) <= now <= event.start + timedelta(hours=6)

    def _evaluate_event(self, s: Session, event_id: str, now: datetime) -> None:
        with self._lock:
            event = self.events.get(event_id)
            if event is None or not self._active(event, now):
                return
            f = self._figures(event, now)
        attendance, fc = f["attendance"], f["forecast"]
        interval = timedelta(seconds=self.settings.series_interval_s)
        with self._lock:
            if not event.history or now - event.history[-1][0] >= timedelta(seconds=10):
                event.history.append((now, attendance))
        if event.last_sample is None or now - event.last_sample >= interval:
            self._write_samples(s, event, f, now)
        if event.overflow_capacity is None:
            return
        rules = DecisionRules(
            capacity=event.capacity,
            threshold=event.overflow_threshold or 1.0,
            doors_open=event.doors_open,
            deadline=event.overflow_deadline,
            margin=self.settings.decision_margin,
            hold_s=self.settings.decision_hold_s,
            min_share=self.settings.min_share_for_decision,
        )
        seats = sum(sec["seats"] for sec in f["sections"])
        live_seats = sum(sec["seats"] for sec in f["sections"] if not sec["stale"])
        coverage = live_seats / seats if seats else 0.0
        reason = None
        if coverage < self.settings.min_live_coverage:
            reason = (
                f"live cameras cover {coverage:.0%} of the seats (< {self.settings.min_live_coverage:.0%}): "
                "no new decision until they are back"
            )
        elif fc is not None and fc.method == "registrations":
            reason = "forecast from registrations only (no one counted yet): no new decision"
        memory = event.decision or DecisionMemory(DecisionState.undecided, now)
        new = step(memory, None if reason else fc, rules, now)
        figures = {
            "attendance": attendance,
            "capacity": event.capacity,
            "threshold": rules.threshold,
            "target": round(rules.target, 1),
            "forecast": round(fc.value, 1) if fc else None,
            "forecast_low": round(fc.low, 1) if fc else None,
            "forecast_high": round(fc.high, 1) if fc else None,
            "share_expected_in": round(fc.share, 4) if fc else None,
            "registrations": event.registrations,
            "registrations_plausible": f["plausible"],
            "minutes_to_start": round((event.start - now).total_seconds() / 60.0, 1),
        }
        changed = new != memory or event.decision is None
        with self._lock:
            event.decision = new
            if new.state != memory.state or event.decision_figures == {}:
                event.decision_figures = figures
            # why the decision may not move now (shown live; saved with the next change)
            event.decision_figures = {**event.decision_figures, "coverage": round(coverage, 4), "reason": reason}
        if changed:
            self._save_decision(s, event_id, new, event.decision_figures)
        if new.state != DecisionState.undecided:
            severity = "warning" if new.state == DecisionState.overflow_needed else "info"
            self._decision_alert(s, event_id, event, new.state, event.decision_figures, severity, now)

    def _evaluate_venues(self, s: Session, now: datetime) -> None:
        with self._lock:
            active: dict[str, EventLive] = {}
            for e in self.events.values():
                if self._active(e, now):
                    active.setdefault(e.venue_id, e)
            work = []
            for vid, event in active.items():
                venue = self.venues.get(vid)
                if venue is None:
                    continue
                cams = {c.id: self._camera_view(c, now) for c in venue.cameras.values()}
                work.append((vid, event.id, cams, self._sections(venue, cams)))
        camera_alerts = self._camera_alerts_due(now)
        for vid, eid, cams, sections in work:
            for cam in cams.values() if camera_alerts else ():
                if cam["last_seen"] is None and cam["state"] != "offline":
                    continue
                for kind, state_name in ((AlertKind.CAMERA_OFFLINE, "offline"), (AlertKind.CAMERA_STALE, "stale")):
                    on = cam["state"] == state_name
                    self.alerts.raise_or_update(
                        s,
                        id=alert_id(kind, vid, cam["id"]),
                        venue=vid,
                        event=eid,
                        kind=kind,
                        subject=cam["id"],
                        state="active" if on else "cleared",
                        active=on,
                        severity="warning",
                        message=f"camera {cam['id']} is {state_name}" if on else f"camera {cam['id']} is back",
                        figures={"camera": cam["id"], "last_seen": cam["last_seen"]},
                        now=now,
                    )
            for sec in sections:
                over = sec["people"] > sec["seats"] and not sec["stale"]
                self.alerts.raise_or_update(
                    s,
                    id=alert_id(AlertKind.SECTION_OVER_CAPACITY, vid, sec["id"]),
                    venue=vid,
                    event=eid,
                    kind=AlertKind.SECTION_OVER_CAPACITY,
                    subject=sec["id"],
                    state="active" if over else "cleared",
                    active=over,
                    severity="critical",
                    message=(
                        f"section {sec['name']}: {sec['people']} people for {sec['seats']} seats"
                        if over
                        else f"section {sec['name']} back within capacity"
                    ),
                    figures={"section": sec["id"], "people": sec["people"], "seats": sec["seats"]},
                    now=now,
                )

    # ----------------------------------------------------------------------------- storage
    def _write_samples(self, s: Session, event: EventLive, f: dict[str, Any], now: datetime) -> None:
        interval = self.settings.series_interval_s
        bucket = datetime.fromtimestamp(int(now.timestamp() // interval * interval), UTC)
        fc: Forecast | None = f["forecast"]
        decision = event.decision.state.value if event.decision else None
        s.merge(
            EventSample(
                event_id=event.id,
                ts=bucket,
                attendance=f["attendance"],
                people=f["people"],
                forecast=fc.value if fc else None,
                forecast_low=fc.low if fc else None,
                forecast_high=fc.high if fc else None,
                decision=decision,
            )
        )
        upsert(
            s,
            SectionSample,
            [
                {
                    "venue_id": event.venue_id,
                    "section_id": sec["id"],
                    "ts": bucket,
                    "occupied": sec["occupied"],
                    "people": sec["people"],
                }
                for sec in f["sections"]
            ],
            ["venue_id", "section_id", "ts"],
        )
        cutoff = now - timedelta(days=self.settings.retention_days)
        s.execute(delete(SectionSample).where(SectionSample.ts < cutoff))
        s.execute(delete(EventSample).where(EventSample.ts < cutoff))
        s.commit()
        event.last_sample = now

    def _decision_alert(
        self,
        s: Session,
        event_id: str,
        event: EventLive,
        state: DecisionState,
        figures: dict[str, Any],
        severity: str,
        now: datetime,
        override_by: str | None = None,
        active: bool = True,
    ) -> None:
        """Raise (or update) the event's one overflow-decision alert; its id is stable per event."""
        message = _decision_message(event, state, figures)
        if override_by:
            message += f" (set by {override_by})"
            figures = {**figures, "override_by": override_by}
        self.alerts.raise_or_update(
            s,
            id=alert_id(AlertKind.OVERFLOW_DECISION, event_id),
            venue=event.venue_id,
            event=event_id,
            kind=AlertKind.OVERFLOW_DECISION,
            subject=None,
            state=state.value,
            active=active,
            severity=severity,
            message=message,
            figures=figures,
            now=now,
        )

    def _save_decision(self, s: Session, event_id: str, d: DecisionMemory, figures: dict[str, Any]) -> None:
        s.merge(
            Decision(
                event_id=event_id,
                state=d.state.value,
                since=d.since,
                frozen=d.frozen,
                override_by=d.override_by,
                candidate=d.candidate.value if d.candidate else None,
                candidate_since=d.candidate_since,
                figures=figures,
            )
        )
        s.commit()

    def flush(self, s: Session) -> None:
        """Save changed section readings and camera states (what a restart reloads)."""
        with self._lock:
            rows, cams = [], []
            for venue in self.venues.values():
                for key in venue.dirty:
                    r = venue.readings.get(key)
                    if r is not None:
                        rows.append((venue.id, key[0], key[1], r))
                for cid in venue.dirty_cameras:
                    c = venue.cameras.get(cid)
                    if c is not None:
                        cams.append((venue.id, c.id, c.state, c.last_seen, c.last_seq))
                venue.dirty = set()
                venue.dirty_cameras = set()
        self._last_flush = time.monotonic()
        if not rows and not cams:
            return
        upsert(
            s,
            SectionState,
            [
                {
                    "venue_id": vid,
                    "section_id": sid,
                    "camera_id": cid,
                    "occupied": r.occupied,
                    "people": r.people,
                    "seats": r.seats,
                    "ts": r.ts,
                    "received_at": r.received,
                }
                for vid, sid, cid, r in rows
            ],
            ["venue_id", "section_id", "camera_id"],
        )
        upsert(
            s,
            Camera,
            [
                {"venue_id": vid, "id": cid, "state": state, "last_seen": last_seen, "last_seq": last_seq}
                for vid, cid, state, last_seen, last_seq in cams
            ],
            ["venue_id", "id"],
        )
        s.commit()

    def merge_saved(self, s: Session) -> None:
        """Take newer readings saved by other processes (shared subscription: each sees a share)."""
        states = s.scalars(select(SectionState)).all()
        cams = s.scalars(select(Camera)).all()
        with self._lock:
            for st in states:
                venue = self.venues.get(st.venue_id)
                if venue is None:
                    continue
                key = (st.section_id, st.camera_id)
                mine = venue.readings.get(key)
                if mine is None or st.received_at > mine.received:
                    venue.readings[key] = Reading(st.occupied, st.people, st.seats, st.ts, st.received_at)
            for cam in cams:
                live = self.venues[cam.venue_id].cameras.get(cam.id) if cam.venue_id in self.venues else None
                if (
                    live is not None
                    and cam.last_seen is not None
                    and (live.last_seen is None or cam.last_seen > live.last_seen)
                ):
                    live.last_seen = cam.last_seen
                    if cam.state != "unknown":
                        live.state = cam.state

    # ---------------------------------------------------------------------------- override
    def override_decision(self, event_id: str, state: DecisionState | None, user: str) -> DecisionMemory:
        """Operator override (frozen at ``state``); ``None`` returns the decision to automatic.

        Holds the tick lock, so an evaluation running now cannot write its result over the override.
        """
        with self._tick_lock:
            now = self.clock.now()
            with self._lock:
                event = self.events[event_id]
                old = event.decision or DecisionMemory(DecisionState.undecided, now)
                if state is None:
                    new = DecisionMemory(old.state, now)
                else:
                    new = DecisionMemory(state, now, frozen=True, override_by=user)
                event.decision = new
                figures = dict(event.decision_figures)
            with self.db.session() as s:
                self._save_decision(s, event_id, new, figures)
                if new.state != DecisionState.undecided:
                    self._decision_alert(s, event_id, event, new.state, figures, "warning", now, override_by=user)
                elif state is not None:  # withdrawn by hand: the earlier decision alert must not stay active
                    self._decision_alert(
                        s, event_id, event, new.state, figures, "info", now, override_by=user, active=False
                    )
        self._notify()
        return new


def _config_fingerprint(s: Session) -> int:
    """A cheap fingerprint of what `LiveHub.reload` loads from outside the live state (a few small rows)."""
    queries = (
        select(Venue.id, Venue.name),
        select(Section.venue_id, Section.id, Section.name, Section.seats, Section.cameras),
        select(Camera.venue_id, Camera.id, Camera.name),
        select(*Event.__table__.columns),
        select(RegistrationSummary.event_id, RegistrationSummary.imported_at, RegistrationSummary.total),
    )
    return hash(tuple(tuple(sorted(repr(tuple(row)) for row in s.execute(q))) for q in queries))


def _decision_message(event: EventLive, state: DecisionState, f: dict[str, Any]) -> str:
    fc = f.get("forecast")
    band = f"{f.get('forecast_low'):.0f}-{f.get('forecast_high'):.0f}" if fc is not None else "n/a"
    base = (
        f"{event.name}: {f.get('attendance')} in, forecast {fc if fc is None else round(fc)} "
        f"(range {band}) for {event.capacity} seats, {f.get('minutes_to_start')} min to start"
    )
    if state == DecisionState.cancel_overflow:
        return f"Cancel the overflow event ({event.overflow_name or 'overflow'}): main venue will not fill. {base}."
    if state == DecisionState.overflow_needed:
        return f"Overflow event needed ({event.overflow_name or 'overflow'}): main venue will fill. {base}."
    return f"Overflow decision not yet clear. {base}."
