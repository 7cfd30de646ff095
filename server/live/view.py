"""The JSON of ``GET /api/v1/events/{id}/live`` (and of each server-sent event), from a snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from server.decision import DecisionState
from server.live.snapshot import EventSnapshot, SectionView
from server.live.state import SeriesPoint
from server.venues import overflow_dict


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def section_json(sec: SectionView) -> dict[str, Any]:
    return {
        "id": sec.id,
        "name": sec.name,
        "kind": sec.kind,
        "seats": sec.seats,
        "occupied": sec.occupied,
        "people": sec.people,
        "camera": sec.camera,
        "cameras": list(sec.cameras),
        "stale": sec.stale,
        "updated": _iso(sec.updated),
    }


def arrival_rate(series: tuple[SeriesPoint, ...], attendance: int, now: datetime, window_s: float) -> float | None:
    """People per minute over the last ``window_s`` (event time); None without enough history or after
    the start (nobody is arriving for the decision any more)."""
    past = [p for p in series if now - timedelta(seconds=window_s) <= p.ts < now]
    if not past:
        return None
    minutes = (now - past[0].ts).total_seconds() / 60.0
    if minutes < min(window_s / 60.0, 5.0) / 2:  # a few seconds of history make no rate
        return None
    return round((attendance - past[0].attendance) / minutes, 2)


def live_json(snap: EventSnapshot, alerts: list[dict[str, Any]], rate_window_s: float) -> dict[str, Any]:
    ev = snap.event
    attendance = snap.attendance
    reg = snap.registrations
    fc = snap.forecast
    decision = snap.decision
    forecast = None
    if fc is not None:
        # value/low/high: the median and the 90 % band (names kept for API clients of v1)
        forecast = {**fc, "value": fc["p50"], "low": fc["p05"], "high": fc["p95"], "at": ev.start.isoformat()}
    provisional_until = None
    if decision is None or not decision.frozen:
        provisional_until = _iso(ev.overflow_deadline) if ev.overflow_capacity is not None else None
    return {
        "event_id": ev.id,
        "venue_id": ev.venue_id,
        "event": {
            "name": ev.name,
            "doors_open": ev.doors_open.isoformat(),
            "start": ev.start.isoformat(),
            "timezone": ev.timezone,
            "overflow": overflow_dict(ev),
        },
        "attendance": attendance,
        "people": snap.people,
        "queue": snap.queue,
        "coverage": round(snap.coverage, 4),
        "capacity": ev.capacity,
        "fill_ratio": round(attendance / ev.capacity, 4) if ev.capacity else None,
        "registrations": reg.total,
        "registrations_plausible": reg.plausible,
        "registrations_suspect_share": round(reg.suspect_share, 4),
        "show_up_ratio": round(attendance / reg.total, 5) if reg.total else None,
        "arrival_rate_per_min": (
            arrival_rate(snap.series, attendance, snap.now, rate_window_s) if snap.now < ev.start else None
        ),
        "forecast": forecast,
        "decision": {
            "state": decision.state.value if decision else DecisionState.undecided.value,
            "since": _iso(decision.since) if decision else None,
            "frozen": decision.frozen if decision else False,
            "override_by": decision.override_by if decision else None,
            "candidate": decision.candidate.value if decision and decision.candidate else None,
            "reversed_from": decision.reversed_from.value if decision and decision.reversed_from else None,
            "provisional_until": provisional_until,
            "p_reach_target": fc.get("p_reach_target") if fc else None,
            "figures": snap.decision_figures,
        },
        "sections": [section_json(s) for s in snap.sections],
        "cameras": [
            {
                "id": c.id,
                "name": c.name,
                "state": c.state,
                "last_seen": _iso(c.last_seen),
                "last_seq": c.last_seq,
                "stale": c.stale,
                "calibration": c.calibration.model_dump(mode="json") if c.calibration else None,
            }
            for c in snap.cameras
        ],
        "alerts": alerts,
        "ts": snap.now.isoformat(),
    }
