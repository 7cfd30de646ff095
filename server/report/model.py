"""The report's data: one immutable, typed value per event (pydantic, so it also serialises to JSON)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventFacts(_Frozen):
    id: str
    name: str
    venue_id: str
    venue_name: str
    timezone: str
    doors_open: datetime
    start: datetime
    capacity: int
    overflow_name: str | None = None
    overflow_capacity: int | None = None
    deadline: datetime | None = None
    threshold: float | None = None

    @property
    def target(self) -> float | None:
        """Attendance at which the overflow is needed (capacity x threshold)."""
        return self.capacity * (self.threshold or 1.0) if self.overflow_capacity is not None else None


class SeriesPoint(_Frozen):
    ts: datetime
    attendance: int
    queue: int = 0
    p05: float | None = None
    p50: float | None = None
    p95: float | None = None
    decision: str | None = None
    p_reach_target: float | None = None


class DecisionStep(_Frozen):
    """One change of the overflow decision: automatic, frozen at the deadline, or set by an operator."""

    ts: datetime
    state: str
    previous: str | None
    frozen: bool
    reversed_from: str | None = None
    by: str | None = None
    attendance: int | None = None
    p50: float | None = None
    p_reach_target: float | None = None


class ForecastCheck(_Frozen):
    """The forecast made ``minutes_before`` the start against the final attendance."""

    minutes_before: int
    ts: datetime | None
    p05: float | None
    p50: float | None
    p95: float | None
    final: int | None

    @property
    def error(self) -> float | None:
        """(p50 - final) / final."""
        if self.p50 is None or not self.final:
            return None
        return (self.p50 - self.final) / self.final

    @property
    def within_band(self) -> bool | None:
        if self.p05 is None or self.p95 is None or self.final is None:
            return None
        return self.p05 <= self.final <= self.p95


class TicketShowUp(_Frozen):
    ticket_type: str
    registered: int
    suspect: int


class Registrations(_Frozen):
    total: int
    suspect: int
    by_ticket_type: tuple[TicketShowUp, ...]

    @property
    def plausible(self) -> int:
        return self.total - self.suspect


class SectionFill(_Frozen):
    id: str
    name: str
    kind: str
    seats: int
    occupied: int | None
    people: int | None

    @property
    def fill(self) -> float | None:
        if self.occupied is None or not self.seats or self.kind == "queue":
            return None
        return self.occupied / self.seats


class CameraUptime(_Frozen):
    id: str
    name: str
    sections: tuple[str, ...]
    uptime: float | None
    """Share of the window (doors-open to the start) the camera was neither stale nor offline; None: unknown."""
    down_minutes: float
    incidents: int
    never_reported: bool = False


class AlertEpisode(_Frozen):
    """An alert raised (or changed) and what became of it: cleared, acknowledged and by whom."""

    alert_id: str
    kind: str
    subject: str | None
    state: str
    severity: str
    message: str
    raised_at: datetime
    cleared_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None


class Delivery(_Frozen):
    """One alert change sent to one organizer channel."""

    alert_id: str
    alert_state: str
    target: str
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    delivered_at: datetime | None


class Report(_Frozen):
    event: EventFacts
    as_of: datetime
    final: bool
    """True once the event has started (the final attendance is the attendance at the start)."""
    final_attendance: int | None
    final_at: datetime | None
    peak_attendance: int | None
    series: tuple[SeriesPoint, ...]
    decision_state: str | None
    decision_frozen: bool
    decision_override_by: str | None
    timeline: tuple[DecisionStep, ...]
    forecast_checks: tuple[ForecastCheck, ...]
    registrations: Registrations | None
    sections_at: datetime | None
    sections: tuple[SectionFill, ...]
    cameras: tuple[CameraUptime, ...]
    alerts: tuple[AlertEpisode, ...]
    deliveries: tuple[Delivery, ...]

    @property
    def provisional(self) -> bool:
        return not self.final

    @property
    def show_up(self) -> float | None:
        """Final attendance / registrations."""
        r = self.registrations
        if r is None or not r.total or self.final_attendance is None:
            return None
        return self.final_attendance / r.total
