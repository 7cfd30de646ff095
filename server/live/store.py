"""Loading the live state from the database and saving it back (what a restarted server continues from)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.db.models import (
    Camera,
    Decision,
    DecisionChange,
    Event,
    EventSample,
    RegistrationSummary,
    Section,
    SectionSample,
    SectionState,
    Venue,
)
from server.db.session import upsert
from server.decision import DecisionMemory, DecisionState
from server.live.snapshot import EventSnapshot
from server.live.state import CameraLive, EventInfo, EventLive, LiveState, Reading, SectionCfg, SeriesPoint, VenueLive


def load(s: Session, state: LiveState) -> tuple[dict[str, VenueLive], dict[str, EventLive]]:
    """Venues, events, registration totals, decisions and saved live state, merged with what ``state``
    already holds in memory (readings, camera state, series and decisions are kept)."""
    with state.lock:
        old_venues, old_events = dict(state.venues), dict(state.events)
    venues: dict[str, VenueLive] = {}
    for v in s.scalars(select(Venue)):
        old = old_venues.get(v.id)
        live = VenueLive(v.id, v.name)
        if old is not None:
            live.readings, live.dirty, live.dirty_cameras = old.readings, old.dirty, old.dirty_cameras
        venues[v.id] = live
    for sec in s.scalars(select(Section)):
        if sec.venue_id in venues:
            venues[sec.venue_id].sections[sec.id] = SectionCfg(
                sec.id, sec.name, sec.seats, list(sec.cameras), sec.kind or "seats"
            )
    for cam in s.scalars(select(Camera)):
        if cam.venue_id not in venues:
            continue
        old_v = old_venues.get(cam.venue_id)
        old_c = old_v.cameras.get(cam.id) if old_v else None
        if old_c is not None:
            old_c.name = cam.name
            venues[cam.venue_id].cameras[cam.id] = old_c
        else:
            venues[cam.venue_id].cameras[cam.id] = CameraLive(
                cam.id, cam.name, cam.state, None, cam.last_seen, cam.last_seq,
                last_stream=cam.last_stream, prev_stream=cam.prev_stream,
            )
    for st in s.scalars(select(SectionState)):
        v = venues.get(st.venue_id)
        if v is not None and (st.section_id, st.camera_id) not in v.readings:
            v.readings[(st.section_id, st.camera_id)] = Reading(st.occupied, st.people, st.seats, st.ts, st.received_at)
    summaries = {r.event_id: r for r in s.scalars(select(RegistrationSummary))}
    decisions = {d.event_id: d for d in s.scalars(select(Decision))}
    events: dict[str, EventLive] = {}
    for e in s.scalars(select(Event)):
        old_e = old_events.get(e.id)
        live_e = EventLive(
            EventInfo(
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
                e.timezone or "UTC",
            )
        )
        if old_e is not None:
            live_e.history, live_e.last_sample = old_e.history, old_e.last_sample
            live_e.decision, live_e.decision_figures = old_e.decision, old_e.decision_figures
            live_e.forecast = old_e.forecast
        summary = summaries.get(e.id)
        if summary is not None:
            live_e.registrations = summary.total
            live_e.suspect = summary.suspect
            live_e.suspect_share = summary.suspect_share
        d = decisions.get(e.id)
        if live_e.decision is None and d is not None:
            live_e.decision = _memory(d)
            live_e.decision_figures = dict(d.figures or {})
        if not live_e.history:
            for sample in s.scalars(select(EventSample).where(EventSample.event_id == e.id).order_by(EventSample.ts)):
                live_e.history.append(
                    SeriesPoint(
                        sample.ts,
                        sample.attendance,
                        sample.queue or 0,
                        1.0 if sample.coverage is None else sample.coverage,
                    )
                )
                live_e.last_sample = sample.ts
        events[e.id] = live_e
    return venues, events


def config_fingerprint(s: Session) -> int:
    """A cheap fingerprint of what `load` reads from outside the live state (a few small rows)."""
    queries = (
        select(Venue.id, Venue.name),
        select(Section.venue_id, Section.id, Section.name, Section.seats, Section.cameras, Section.kind),
        select(Camera.venue_id, Camera.id, Camera.name),
        select(*Event.__table__.columns),
        select(RegistrationSummary.event_id, RegistrationSummary.imported_at, RegistrationSummary.total),
    )
    return hash(tuple(tuple(sorted(repr(tuple(row)) for row in s.execute(q))) for q in queries))


def write_sample(
    s: Session, snap: EventSnapshot, forecast: dict[str, Any] | None, decision: str | None, interval_s: float,
    retention_days: float,
) -> None:
    """One point of the event's and its sections' time series (bucketed to ``interval_s``)."""
    now = snap.now
    bucket = datetime.fromtimestamp(int(now.timestamp() // interval_s * interval_s), UTC)
    s.merge(
        EventSample(
            event_id=snap.event.id,
            ts=bucket,
            attendance=snap.attendance,
            people=snap.people,
            forecast=forecast["p50"] if forecast else None,
            forecast_low=forecast["p05"] if forecast else None,
            forecast_high=forecast["p95"] if forecast else None,
            decision=decision,
            queue=snap.queue,
            coverage=round(snap.coverage, 4),
            p_reach_target=forecast.get("p_reach_target") if forecast else None,
        )
    )
    upsert(
        s,
        SectionSample,
        [
            {"venue_id": snap.event.venue_id, "section_id": sec.id, "ts": bucket, "occupied": sec.occupied, "people": sec.people}
            for sec in snap.sections
        ],
        ["venue_id", "section_id", "ts"],
    )
    cutoff = now - timedelta(days=retention_days)
    s.execute(delete(SectionSample).where(SectionSample.ts < cutoff))
    s.execute(delete(EventSample).where(EventSample.ts < cutoff))
    s.commit()


def save_decision(
    s: Session, event_id: str, d: DecisionMemory, figures: dict[str, Any], by: str | None = None, commit: bool = True
) -> None:
    """Save the decision; a change of state, freeze or override is also appended to ``decision_changes``.

    ``by``: the operator behind this change (an override, or handing it back to automatic). ``commit=False``:
    the caller commits, e.g. together with the decision's alert, so that no other process sees one without
    the other.
    """
    old = s.get(Decision, event_id)
    was = (old.state, old.frozen, old.override_by) if old is not None else None
    if was != (d.state.value, d.frozen, d.override_by) or by is not None:
        s.add(
            DecisionChange(
                event_id=event_id,
                ts=figures_ts(figures, d.since),
                state=d.state.value,
                previous=old.state if old is not None else None,
                frozen=d.frozen,
                reversed_from=d.reversed_from.value if d.reversed_from else None,
                by=by or d.override_by,
                figures=figures,
            )
        )
    s.merge(
        Decision(
            event_id=event_id,
            state=d.state.value,
            since=d.since,
            frozen=d.frozen,
            override_by=d.override_by,
            candidate=d.candidate.value if d.candidate else None,
            candidate_since=d.candidate_since,
            reversed_from=d.reversed_from.value if d.reversed_from else None,
            figures=figures,
        )
    )
    if commit:
        s.commit()


def figures_ts(figures: dict[str, Any], default: datetime) -> datetime:
    """The evaluation time in ``figures["at"]`` (ISO 8601), or ``default``."""
    at = figures.get("at")
    try:
        return datetime.fromisoformat(at) if isinstance(at, str) else default
    except ValueError:
        return default


def flush(s: Session, state: LiveState) -> None:
    """Save changed section readings and camera states (what a restart reloads)."""
    with state.lock:
        rows, cams = [], []
        for venue in state.venues.values():
            for key in venue.dirty:
                r = venue.readings.get(key)
                if r is not None:
                    rows.append((venue.id, key[0], key[1], r))
            for cid in venue.dirty_cameras:
                c = venue.cameras.get(cid)
                if c is not None:
                    cams.append((venue.id, c.id, c.state, c.last_seen, c.last_seq, c.last_stream, c.prev_stream))
            venue.dirty = set()
            venue.dirty_cameras = set()
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
            {
                "venue_id": vid,
                "id": cid,
                "state": st,
                "last_seen": last_seen,
                "last_seq": last_seq,
                "last_stream": last_stream,
                "prev_stream": prev_stream,
            }
            for vid, cid, st, last_seen, last_seq, last_stream, prev_stream in cams
        ],
        ["venue_id", "id"],
    )
    s.commit()


def merge_saved(s: Session, state: LiveState) -> None:
    """Take newer readings saved by other processes (shared subscription: each sees a share)."""
    states = s.scalars(select(SectionState)).all()
    cams = s.scalars(select(Camera)).all()
    with state.lock:
        for st in states:
            venue = state.venues.get(st.venue_id)
            if venue is None:
                continue
            key = (st.section_id, st.camera_id)
            mine = venue.readings.get(key)
            if mine is None or st.received_at > mine.received:
                venue.readings[key] = Reading(st.occupied, st.people, st.seats, st.ts, st.received_at)
        for cam in cams:
            venue = state.venues.get(cam.venue_id)
            live = venue.cameras.get(cam.id) if venue else None
            if live is not None and cam.last_seen is not None and (live.last_seen is None or cam.last_seen > live.last_seen):
                live.last_seen = cam.last_seen
                if cam.state != "unknown":
                    live.state = cam.state


def load_decisions(s: Session, state: LiveState, series: bool = False) -> None:
    """Replace the in-memory decision memory (and, with ``series``, the attendance series) of every event by
    what the database holds: what a process taking over the evaluation continues from."""
    decisions = {d.event_id: d for d in s.scalars(select(Decision))}
    samples: dict[str, list[SeriesPoint]] = {}
    if series:
        for sample in s.scalars(select(EventSample).order_by(EventSample.ts)):
            samples.setdefault(sample.event_id, []).append(
                SeriesPoint(sample.ts, sample.attendance, sample.queue or 0, 1.0 if sample.coverage is None else sample.coverage)
            )
    with state.lock:
        for eid, event in state.events.items():
            d = decisions.get(eid)
            event.decision = _memory(d) if d is not None else None
            event.decision_figures = dict(d.figures or {}) if d is not None else {}
            if series:
                event.history.clear()
                event.history.extend(samples.get(eid, []))
                event.last_sample = event.history[-1].ts if event.history else None


DecisionKey = tuple[str, bool, str | None]


def decision_key(d: DecisionMemory | None) -> DecisionKey | None:
    """What an operator can change about a decision: (state, frozen, override_by)."""
    return (d.state.value, d.frozen, d.override_by) if d is not None else None


def saved_decision_keys(s: Session) -> dict[str, DecisionKey]:
    """`decision_key` of every saved decision, read from the database now."""
    rows = s.execute(select(Decision.event_id, Decision.state, Decision.frozen, Decision.override_by))
    return {eid: (state, bool(frozen), by) for eid, state, frozen, by in rows}


def adopt_decisions(s: Session, state: LiveState, event_ids: list[str]) -> None:
    """Replace the in-memory decision of these events by the saved one (written by another process)."""
    query = select(Decision).where(Decision.event_id.in_(event_ids)).execution_options(populate_existing=True)
    saved = {d.event_id: d for d in s.scalars(query)}
    with state.lock:
        for eid in event_ids:
            event, d = state.events.get(eid), saved.get(eid)
            if event is not None and d is not None:
                event.decision = _memory(d)
                event.decision_figures = dict(d.figures or {})


def _memory(d: Decision) -> DecisionMemory:
    return DecisionMemory(
        DecisionState(d.state),
        d.since,
        d.frozen,
        d.override_by,
        DecisionState(d.candidate) if d.candidate else None,
        d.candidate_since,
        DecisionState(d.reversed_from) if d.reversed_from else None,
    )
