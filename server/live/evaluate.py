"""Evaluation of one event: a pure function from a snapshot to forecast, decision and alerts.

``evaluate(snapshot, rules) -> Evaluation``; nothing here reads a clock, a lock or a database, so the live
server, ``turnout replay`` and ``turnout backtest`` run exactly this code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from server.alerts import alert_id
from server.decision import DecisionMemory, DecisionRules, DecisionState, step
from server.forecast import (
    CALIBRATED_FLOOR,
    CountError,
    FinalForecast,
    ForecastParams,
    Registrations,
    ShapeBank,
    forecast_final,
)
from server.live.snapshot import INSIDE_KINDS, EventSnapshot
from server.live.state import EventInfo
from turnout.contract import AlertKind


@dataclass(frozen=True)
class EvalRules:
    """Settings that shape the evaluation of one event."""

    shapes: ShapeBank
    params: ForecastParams
    show_up: float
    show_up_spread: float
    min_live_coverage: float
    decision: DecisionRules | None
    """None: the event has no overflow event to decide on."""


@dataclass(frozen=True)
class AlertSpec:
    """An alert as the evaluator wants it to be now; `AlertBook` stores/publishes it when it changed."""

    id: str
    venue: str
    event: str | None
    kind: AlertKind
    subject: str | None
    state: str
    active: bool
    severity: str
    message: str
    figures: dict[str, Any]


@dataclass(frozen=True)
class Evaluation:
    event_id: str
    forecast: FinalForecast | None
    decision: DecisionMemory | None
    figures: dict[str, Any]
    alerts: tuple[AlertSpec, ...]


def progress(event: EventInfo, snap_ts: Any) -> float:
    """Normalised event time: 0 at doors-open, 1 at the start."""
    span = (event.start - event.doors_open).total_seconds()
    return (snap_ts - event.doors_open).total_seconds() / span if span > 0 else 1.0


def count_error(snap: EventSnapshot) -> CountError:
    """How far the current counts can be trusted, from each live camera's published calibration."""
    cams = {c.id: c for c in snap.cameras}
    raw = corrected = 0.0
    unc_raw = 0.0
    per_cam: dict[str, tuple[float, float]] = {}  # camera -> (corrected count, relative sd)
    uncalibrated: set[str] = set()
    seats_unc = seats_all = 0
    for sec in snap.sections:
        if sec.kind not in INSIDE_KINDS and sec.kind != "queue":
            continue
        cal = cams[sec.camera].calibration if sec.camera in cams else None
        seats_all += sec.seats
        if cal is None:
            unc_raw += sec.counted
            seats_unc += sec.seats
            corrected += sec.counted
            if sec.camera is not None:
                uncalibrated.add(sec.camera)
        else:
            c = sec.counted / cal.bias
            corrected += c
            prev = per_cam.get(sec.camera or "", (0.0, cal.spread / cal.bias))
            per_cam[sec.camera or ""] = (prev[0] + c, prev[1])
        raw += sec.counted
    if raw > 0:
        factor = corrected / raw
        unc_share = unc_raw / raw
    else:
        factor, unc_share = 1.0, (seats_unc / seats_all if seats_all else 1.0)
    cal_total = sum(c for c, _ in per_cam.values())
    cal_sd = math.sqrt(sum((c * sd) ** 2 for c, sd in per_cam.values())) / cal_total if cal_total else 0.0
    return CountError(
        factor=factor,
        rel_sd=max(cal_sd, CALIBRATED_FLOOR),
        uncalibrated_share=unc_share,
        uncalibrated_cameras=len(uncalibrated),
    )


def forecast(snap: EventSnapshot, rules: EvalRules) -> FinalForecast | None:
    """The final-attendance distribution for ``snap`` (series points with too few cameras live skipped)."""
    ev = snap.event
    minutes_per_u = (ev.start - ev.doors_open).total_seconds() / 60.0
    series = [
        (progress(ev, p.ts), float(p.attendance + p.queue))
        for p in snap.series
        if p.coverage >= rules.min_live_coverage and p.ts < snap.now
    ]
    coverage = snap.coverage
    if coverage >= rules.min_live_coverage:
        series.append((progress(ev, snap.now), float(snap.attendance + snap.queue)))
    target = None
    if rules.decision is not None:
        target = rules.decision.target
    reg = snap.registrations
    registrations = (
        Registrations(reg.plausible, reg.suspect_share, ev.expected_show_up or rules.show_up, rules.show_up_spread)
        if reg.plausible > 0
        else None
    )
    return forecast_final(
        u_now=progress(ev, snap.now),
        series=series,
        counted_now=float(snap.attendance),
        queue_now=float(snap.queue),
        capacity=ev.capacity,
        target=target,
        count_error=count_error(snap),
        shapes=rules.shapes,
        registrations=registrations,
        params=rules.params,
        minutes_per_u=max(minutes_per_u, 1.0),
    )


def figures(snap: EventSnapshot, fc: FinalForecast | None, rules: EvalRules, hold: str | None) -> dict[str, Any]:
    """The figures a decision rests on, as sent with alerts and shown on the dashboard."""
    ev = snap.event
    return {
        "at": snap.now.isoformat(),
        "attendance": snap.attendance,
        "queue": snap.queue,
        "capacity": ev.capacity,
        "coverage": round(snap.coverage, 4),
        "threshold": rules.decision.threshold if rules.decision else None,
        "target": round(rules.decision.target, 1) if rules.decision else None,
        "forecast_p05": round(fc.p05) if fc else None,
        "forecast_p50": round(fc.p50) if fc else None,
        "forecast_p95": round(fc.p95) if fc else None,
        "p_reach_target": round(fc.p_reach_target, 4) if fc and fc.p_reach_target is not None else None,
        "registrations": snap.registrations.total,
        "registrations_plausible": snap.registrations.plausible,
        "minutes_to_start": round((ev.start - snap.now).total_seconds() / 60.0, 1),
        "reasons": "; ".join(fc.reasons) if fc else "",
        "reason": hold,
    }


def evaluate(snap: EventSnapshot, rules: EvalRules) -> Evaluation:
    """Forecast, the next decision state and the overflow-decision alert for one event."""
    fc = forecast(snap, rules)
    hold = None
    coverage = snap.coverage
    if coverage < rules.min_live_coverage:
        hold = (
            f"live cameras cover {coverage:.0%} of the seats (< {rules.min_live_coverage:.0%}): "
            "no new decision until they are back"
        )
    elif fc is not None and fc.method == "registrations":
        hold = "forecast from registrations only (no one counted yet): no new decision"
    figs = figures(snap, fc, rules, hold)
    if rules.decision is None:
        return Evaluation(snap.event.id, fc, snap.decision, figs, ())
    memory = snap.decision or DecisionMemory(DecisionState.undecided, snap.now)
    new = step(memory, None if hold else fc, rules.decision, snap.now)
    alert = decision_alert(snap.event, new, figs, deadline_passed=new.frozen and not memory.frozen)
    return Evaluation(snap.event.id, fc, new, figs, (alert,) if alert else ())


def _minutes_in_words(minutes: float) -> str:
    """``95.2`` -> "1 h 35 min to the start"; negative: "started 10 min ago"."""
    m = round(abs(minutes))
    text = f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"
    return f"{text} to the start" if minutes >= 0 else f"started {text} ago"


def decision_alert(
    event: EventInfo,
    memory: DecisionMemory,
    figs: dict[str, Any],
    *,
    deadline_passed: bool = False,
    override_by: str | None = None,
    withdrawn: bool = False,
) -> AlertSpec | None:
    """The event's one overflow-decision alert (stable id) as it should be now, or None for no alert.

    Published by `AlertBook` only when its state changes, so it carries the figures of that moment.
    """
    state = memory.state
    active = not withdrawn
    if state == DecisionState.undecided and not (deadline_passed and memory.frozen) and not withdrawn:
        return None
    p = figs.get("p_reach_target")
    chance = f"{p:.0%}" if isinstance(p, float) else "unknown"
    band = (
        f"final attendance forecast {figs['forecast_p05']:,} to {figs['forecast_p95']:,} "
        f"(most likely {figs['forecast_p50']:,})"
        if figs.get("forecast_p50") is not None
        else "no forecast yet"
    )
    target = f"{figs['target']:,.0f}" if figs.get("target") is not None else "the target"
    base = (
        f"{event.name}: {figs['attendance']:,} people in, {band}; chance of reaching {target}: {chance}; "
        f"{_minutes_in_words(figs['minutes_to_start'])}"
    )
    overflow = event.overflow_name or "overflow"
    if state == DecisionState.cancel_overflow:
        msg, severity = f"Cancel the overflow event ({overflow}): the main venue will not fill. {base}.", "info"
    elif state == DecisionState.overflow_needed:
        msg, severity = f"Overflow event needed ({overflow}): the main venue will fill. {base}.", "warning"
    else:
        msg = f"Overflow decision not reached by the deadline: the organizer must decide. {base}."
        severity = "warning"
        if withdrawn:
            msg = f"Overflow decision withdrawn: back to automatic. {base}."
            severity = "info"
    if memory.reversed_from is not None and not override_by:
        msg += f" This REVERSES the earlier decision ({memory.reversed_from.value.replace('_', ' ')})."
    extra: dict[str, Any] = {}
    if override_by:
        msg += f" (set by {override_by})"
        extra["override_by"] = override_by
    if memory.reversed_from is not None:
        extra["reverses"] = memory.reversed_from.value
    return AlertSpec(
        id=alert_id(AlertKind.OVERFLOW_DECISION, event.id),
        venue=event.venue_id,
        event=event.id,
        kind=AlertKind.OVERFLOW_DECISION,
        subject=None,
        state=state.value,
        active=active,
        severity=severity,
        message=msg,
        figures={**figs, **extra},
    )


def venue_alerts(snap: EventSnapshot, camera_alerts: bool) -> tuple[AlertSpec, ...]:
    """Camera offline/stale and section-over-capacity alerts of the event's venue."""
    vid, eid = snap.event.venue_id, snap.event.id
    out: list[AlertSpec] = []
    for cam in snap.cameras if camera_alerts else ():
        if cam.last_seen is None and cam.state != "offline":
            continue
        for kind, state_name in ((AlertKind.CAMERA_OFFLINE, "offline"), (AlertKind.CAMERA_STALE, "stale")):
            on = cam.state == state_name
            out.append(
                AlertSpec(
                    id=alert_id(kind, vid, cam.id),
                    venue=vid,
                    event=eid,
                    kind=kind,
                    subject=cam.id,
                    state="active" if on else "cleared",
                    active=on,
                    severity="warning",
                    message=f"camera {cam.id} is {state_name}" if on else f"camera {cam.id} is back",
                    figures={"camera": cam.id, "last_seen": cam.last_seen.isoformat() if cam.last_seen else None},
                )
            )
    for sec in snap.sections:
        if sec.kind == "queue":
            continue
        over = sec.people > sec.seats and not sec.stale
        out.append(
            AlertSpec(
                id=alert_id(AlertKind.SECTION_OVER_CAPACITY, vid, sec.id),
                venue=vid,
                event=eid,
                kind=AlertKind.SECTION_OVER_CAPACITY,
                subject=sec.id,
                state="active" if over else "cleared",
                active=over,
                severity="critical",
                message=(
                    f"section {sec.name}: {sec.people} people for {sec.seats} seats"
                    if over
                    else f"section {sec.name} back within capacity"
                ),
                figures={"section": sec.id, "people": sec.people, "seats": sec.seats},
            )
        )
    return tuple(out)
