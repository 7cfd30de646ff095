"""Reading one event's report out of the database (`gather`): series, decisions, alerts, cameras, sections.

Sources: ``event_samples`` (attendance and forecast band per `series_interval_s`), ``decision_changes``
(falls back to the decision column of the samples), ``alert_changes`` (falls back to ``alerts``),
``section_samples`` (fill per section), ``registration_summaries``/``registrations`` and
``alert_deliveries``. Nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from server.db.models import (
    AlertChange,
    AlertDelivery,
    AlertRow,
    Camera,
    Decision,
    DecisionChange,
    Event,
    EventSample,
    Registration,
    RegistrationSummary,
    Section,
    SectionSample,
    Venue,
)
from server.report.model import (
    AlertEpisode,
    CameraUptime,
    DecisionStep,
    Delivery,
    EventFacts,
    ForecastCheck,
    Registrations,
    Report,
    SectionFill,
    SeriesPoint,
    TicketShowUp,
)

CHECK_MINUTES = (120, 90, 60)
"""Forecasts compared with the final: this many minutes before the start."""
CAMERA_KINDS = ("camera_stale", "camera_offline")


class UnknownEvent(LookupError):
    """No event with this id."""


def gather(s: Session, event_id: str, now: datetime) -> Report:
    """The report of ``event_id`` as of ``now`` (final once the start has passed, provisional before)."""
    e = s.get(Event, event_id)
    if e is None:
        known = s.scalars(select(Event.id).order_by(Event.start.desc()).limit(10)).all()
        raise UnknownEvent(f"no event {event_id!r} (events: {', '.join(known) or 'none'})")
    venue = s.get(Venue, e.venue_id)
    facts = EventFacts(
        id=e.id,
        name=e.name,
        venue_id=e.venue_id,
        venue_name=venue.name if venue else e.venue_id,
        timezone=e.timezone or "UTC",
        doors_open=e.doors_open,
        start=e.start,
        capacity=e.capacity,
        overflow_name=e.overflow_name,
        overflow_capacity=e.overflow_capacity,
        deadline=e.overflow_deadline,
        threshold=e.overflow_threshold,
    )
    series = _series(s, event_id)
    final = now >= e.start
    at_start = [p for p in series if p.ts <= e.start]
    final_point = at_start[-1] if at_start else (series[-1] if series and not final else None)
    decision = s.get(Decision, event_id)
    sections_at, sections = _sections(s, e.venue_id, final_point.ts if final_point else None)
    return Report(
        event=facts,
        as_of=now,
        final=final,
        final_attendance=final_point.attendance if final_point else None,
        final_at=final_point.ts if final_point else None,
        peak_attendance=max((p.attendance for p in series), default=None),
        series=tuple(series),
        decision_state=decision.state if decision else None,
        decision_frozen=bool(decision and decision.frozen),
        decision_override_by=decision.override_by if decision else None,
        timeline=_timeline(s, event_id, series),
        forecast_checks=_checks(series, e.start, final_point.attendance if final and final_point else None),
        registrations=_registrations(s, event_id),
        sections_at=sections_at,
        sections=sections,
        cameras=_cameras(s, e.venue_id, e.doors_open, min(e.start, now)),
        alerts=_alerts(s, event_id),
        deliveries=_deliveries(s, event_id),
    )


def _series(s: Session, event_id: str) -> list[SeriesPoint]:
    rows = s.scalars(select(EventSample).where(EventSample.event_id == event_id).order_by(EventSample.ts))
    return [
        SeriesPoint(
            ts=r.ts,
            attendance=r.attendance,
            queue=r.queue or 0,
            p05=r.forecast_low,
            p50=r.forecast,
            p95=r.forecast_high,
            decision=r.decision,
            p_reach_target=r.p_reach_target,
        )
        for r in rows
    ]


def _timeline(s: Session, event_id: str, series: list[SeriesPoint]) -> tuple[DecisionStep, ...]:
    rows = s.scalars(
        select(DecisionChange).where(DecisionChange.event_id == event_id).order_by(DecisionChange.ts, DecisionChange.pk)
    ).all()
    if rows:
        return tuple(
            DecisionStep(
                ts=r.ts,
                state=r.state,
                previous=r.previous,
                frozen=r.frozen,
                reversed_from=r.reversed_from,
                by=r.by,
                attendance=(r.figures or {}).get("attendance"),
                p50=(r.figures or {}).get("forecast_p50"),
                p_reach_target=(r.figures or {}).get("p_reach_target"),
            )
            for r in rows
        )
    steps: list[DecisionStep] = []  # no change log (data from before it existed): the samples' decision column
    previous: str | None = None
    for p in series:
        if p.decision is not None and p.decision != previous:
            steps.append(
                DecisionStep(
                    ts=p.ts, state=p.decision, previous=previous, frozen=False, attendance=p.attendance, p50=p.p50,
                    p_reach_target=p.p_reach_target,
                )
            )
            previous = p.decision
    return tuple(steps)


def _checks(series: list[SeriesPoint], start: datetime, final: int | None) -> tuple[ForecastCheck, ...]:
    out = []
    for minutes in CHECK_MINUTES:
        at = start - timedelta(minutes=minutes)
        before = [p for p in series if p.ts <= at and p.p50 is not None and at - p.ts <= timedelta(minutes=15)]
        p = before[-1] if before else None
        out.append(
            ForecastCheck(
                minutes_before=minutes,
                ts=p.ts if p else None,
                p05=p.p05 if p else None,
                p50=p.p50 if p else None,
                p95=p.p95 if p else None,
                final=final,
            )
        )
    return tuple(out)


def _registrations(s: Session, event_id: str) -> Registrations | None:
    summary = s.get(RegistrationSummary, event_id)
    if summary is None:
        return None
    flagged = case((Registration.duplicate | Registration.disposable, 1), else_=0)
    q = (
        select(Registration.ticket_type, func.count(), func.sum(flagged))
        .where(Registration.event_id == event_id, Registration.import_id == summary.import_id)
        .group_by(Registration.ticket_type)
    )
    counts = {t: (int(n), int(bad or 0)) for t, n, bad in s.execute(q)}
    types = summary.by_ticket_type or {}
    rows = [
        TicketShowUp(ticket_type=t, registered=int(types.get(t, counts.get(t, (0, 0))[0])), suspect=counts.get(t, (0, 0))[1])
        for t in sorted(set(types) | set(counts))
    ]
    rows.sort(key=lambda r: -r.registered)
    return Registrations(total=summary.total, suspect=summary.suspect, by_ticket_type=tuple(rows))


def _sections(s: Session, venue_id: str, at: datetime | None) -> tuple[datetime | None, tuple[SectionFill, ...]]:
    secs = s.scalars(select(Section).where(Section.venue_id == venue_id).order_by(Section.id)).all()
    ts = None
    if at is not None:
        ts = s.scalar(select(func.max(SectionSample.ts)).where(SectionSample.venue_id == venue_id, SectionSample.ts <= at))
    samples = (
        {r.section_id: r for r in s.scalars(select(SectionSample).where(SectionSample.venue_id == venue_id, SectionSample.ts == ts))}
        if ts is not None
        else {}
    )
    out = []
    for sec in secs:
        smp = samples.get(sec.id)
        out.append(
            SectionFill(
                id=sec.id, name=sec.name, kind=sec.kind or "seats", seats=sec.seats,
                occupied=smp.occupied if smp else None, people=smp.people if smp else None,
            )
        )
    return ts, tuple(out)


def _cameras(s: Session, venue_id: str, since: datetime, until: datetime) -> tuple[CameraUptime, ...]:
    """Uptime from the camera alerts' change log over [since, until] (doors-open to the start)."""
    window = (until - since).total_seconds()
    owners: dict[str, list[str]] = defaultdict(list)
    for sec in s.scalars(select(Section).where(Section.venue_id == venue_id).order_by(Section.id)):
        for cam in sec.cameras or []:
            owners[cam].append(sec.id)
    changes = s.scalars(
        select(AlertChange)
        .where(AlertChange.venue_id == venue_id, AlertChange.kind.in_(CAMERA_KINDS), AlertChange.ts <= until)
        .order_by(AlertChange.ts, AlertChange.pk)
    ).all()
    down: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    open_: dict[tuple[str, str], datetime] = {}
    for c in changes:
        if c.subject is None or c.action == "acknowledged":
            continue
        key = (c.subject, c.kind)
        if c.active and key not in open_:
            open_[key] = c.ts
        elif not c.active and key in open_:
            down[c.subject].append((open_.pop(key), c.ts))
    for (cam, _kind), t0 in open_.items():
        down[cam].append((t0, until))
    out = []
    for cam in s.scalars(select(Camera).where(Camera.venue_id == venue_id).order_by(Camera.id)):
        never = cam.last_seen is None or cam.last_seen < since
        intervals = _clip_union(down.get(cam.id, []), since, until)
        down_s = sum((b - a).total_seconds() for a, b in intervals)
        uptime = None if window <= 0 else (0.0 if never else max(0.0, 1.0 - down_s / window))
        out.append(
            CameraUptime(
                id=cam.id, name=cam.name or cam.id, sections=tuple(owners.get(cam.id, ())), uptime=uptime,
                down_minutes=round((window if never and window > 0 else down_s) / 60.0, 1),
                incidents=len(intervals), never_reported=never,
            )
        )
    return tuple(out)


def _clip_union(spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in spans):
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _alerts(s: Session, event_id: str) -> tuple[AlertEpisode, ...]:
    changes = s.scalars(
        select(AlertChange).where(AlertChange.event_id == event_id).order_by(AlertChange.ts, AlertChange.pk)
    ).all()
    if not changes:  # no change log: the alerts as they stand
        rows = s.scalars(select(AlertRow).where(AlertRow.event_id == event_id).order_by(AlertRow.created_at))
        return tuple(
            AlertEpisode(
                alert_id=r.id, kind=r.kind, subject=r.subject, state=r.state, severity=r.severity, message=r.message,
                raised_at=r.created_at, cleared_at=None if r.active else r.updated_at,
                acknowledged_at=r.acknowledged_at, acknowledged_by=r.acknowledged_by,
            )
            for r in rows
        )
    episodes: list[dict] = []
    last: dict[str, int] = {}
    for c in changes:
        i = last.get(c.alert_id)
        if c.action in ("raised", "changed"):
            if i is not None and episodes[i]["cleared_at"] is None:
                episodes[i]["cleared_at"] = c.ts  # superseded by the new state
            last[c.alert_id] = len(episodes)
            episodes.append(
                {
                    "alert_id": c.alert_id, "kind": c.kind, "subject": c.subject, "state": c.state,
                    "severity": c.severity, "message": c.message, "raised_at": c.ts, "cleared_at": None,
                }
            )
        elif c.action == "cleared" and i is not None and episodes[i]["cleared_at"] is None:
            episodes[i]["cleared_at"] = c.ts
        elif c.action == "acknowledged" and i is not None:
            episodes[i].update(acknowledged_at=c.ts, acknowledged_by=c.by)
    return tuple(AlertEpisode(**e) for e in episodes)


def _deliveries(s: Session, event_id: str) -> tuple[Delivery, ...]:
    rows = s.scalars(
        select(AlertDelivery).where(AlertDelivery.event_id == event_id).order_by(AlertDelivery.created_at)
    )
    return tuple(
        Delivery(
            alert_id=r.alert_id, alert_state=r.alert_state, target=r.target, status=r.status, attempts=r.attempts,
            error=r.error, created_at=r.created_at, delivered_at=r.delivered_at,
        )
        for r in rows
    )
