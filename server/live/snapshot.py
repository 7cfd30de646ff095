"""Immutable, typed views of one event's live state: what the evaluator and the API read.

`take()` copies under `LiveState.lock`; everything after that (forecast, decision, JSON) runs on the copy
with no lock held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.decision import DecisionMemory
from server.live.state import CameraLive, EventInfo, LiveState, SeriesPoint, VenueLive
from turnout.contract import CameraState, CountCalibration

INSIDE_KINDS = ("seats", "standing")


@dataclass(frozen=True)
class CameraView:
    id: str
    name: str
    state: str  # unknown | online | degraded | offline | stale
    last_seen: datetime | None
    last_seq: int | None
    stale: bool
    calibration: CountCalibration | None


@dataclass(frozen=True)
class SectionView:
    id: str
    name: str
    kind: str
    seats: int
    occupied: int
    people: int
    camera: str | None
    cameras: tuple[str, ...]
    stale: bool
    updated: datetime | None

    @property
    def counted(self) -> int:
        """What this section adds to attendance (seats: occupied seats; standing: people, up to its
        capacity) or to the queue (people)."""
        if self.kind == "seats":
            return self.occupied
        if self.kind == "standing":
            return min(self.people, self.seats) if self.seats else self.people
        return self.people


@dataclass(frozen=True)
class RegistrationsInfo:
    total: int
    suspect: int
    suspect_share: float

    @property
    def plausible(self) -> int:
        return max(self.total - self.suspect, 0)


@dataclass(frozen=True)
class EventSnapshot:
    """Everything the evaluation of one event needs, at one instant."""

    now: datetime
    event: EventInfo
    sections: tuple[SectionView, ...]
    cameras: tuple[CameraView, ...]
    series: tuple[SeriesPoint, ...]
    registrations: RegistrationsInfo
    decision: DecisionMemory | None
    decision_figures: dict[str, object]
    forecast: dict[str, object] | None

    @property
    def attendance(self) -> int:
        return sum(s.counted for s in self.sections if s.kind in INSIDE_KINDS)

    @property
    def queue(self) -> int:
        return sum(s.counted for s in self.sections if s.kind == "queue")

    @property
    def people(self) -> int:
        return sum(s.people for s in self.sections if s.kind in INSIDE_KINDS)

    @property
    def coverage(self) -> float:
        """Share of the seats (and standing capacity) inside whose count comes from a live camera."""
        inside = [s for s in self.sections if s.kind in INSIDE_KINDS]
        seats = sum(s.seats for s in inside)
        return sum(s.seats for s in inside if not s.stale) / seats if seats else 0.0


def camera_view(cam: CameraLive, now: datetime, stale_after_s: float) -> CameraView:
    stale = cam.last_seen is None or (now - cam.last_seen).total_seconds() > stale_after_s
    state = cam.state
    if state != CameraState.OFFLINE.value and stale and cam.last_seen is not None:
        state = "stale"
    return CameraView(
        cam.id,
        cam.name,
        state,
        cam.last_seen,
        cam.last_seq,
        stale or state == CameraState.OFFLINE.value,
        cam.calibration,
    )


def section_views(venue: VenueLive, cams: dict[str, CameraView]) -> tuple[SectionView, ...]:
    """Each section from its first live camera; with none live, the freshest reading, marked stale."""
    out = []
    for cfg in venue.sections.values():
        chosen = None
        for cid in cfg.cameras:
            r = venue.readings.get((cfg.id, cid))
            if r is not None and cid in cams and not cams[cid].stale:
                chosen = (cid, r)
                break
        stale = chosen is None
        if chosen is None:
            known = [(cid, venue.readings[(cfg.id, cid)]) for cid in cfg.cameras if (cfg.id, cid) in venue.readings]
            chosen = max(known, key=lambda x: x[1].received) if known else None
        out.append(
            SectionView(
                id=cfg.id,
                name=cfg.name,
                kind=cfg.kind,
                seats=cfg.seats,
                occupied=chosen[1].occupied if chosen else 0,
                people=chosen[1].people if chosen else 0,
                camera=chosen[0] if chosen else None,
                cameras=tuple(cfg.cameras),
                stale=stale,
                updated=chosen[1].ts if chosen else None,
            )
        )
    return tuple(out)


def take(state: LiveState, event_id: str, now: datetime, stale_after_s: float) -> EventSnapshot:
    """A consistent copy of one event's live state. KeyError if the event is unknown."""
    with state.lock:
        e = state.events[event_id]
        venue = state.venues.get(e.info.venue_id) or VenueLive(e.info.venue_id, e.info.venue_id)
        cams = {c.id: camera_view(c, now, stale_after_s) for c in venue.cameras.values()}
        return EventSnapshot(
            now=now,
            event=e.info,
            sections=section_views(venue, cams),
            cameras=tuple(cams.values()),
            series=tuple(e.history),
            registrations=RegistrationsInfo(e.registrations, e.suspect, e.suspect_share),
            decision=e.decision,
            decision_figures=dict(e.decision_figures),
            forecast=dict(e.forecast) if e.forecast else None,
        )
