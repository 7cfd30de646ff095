"""Venues (sections, cameras) and events: validated schemas, storage, and loading from a YAML file.

A section lists the cameras that see it; the first one owns it (its count is used), the others take
over when the owner is stale or offline, so a section seen by two cameras is counted once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.db.models import Camera, Event, Section, Venue
from server.notify import NotifyTarget, parse_targets
from turnout.contract import ID_PATTERN, check_camera_id
from turnout.paths import UnsetVariableError, expand_config_vars

Id = Annotated[str, Field(pattern=ID_PATTERN)]

# Camera ids are MQTT topic levels next to the venue's own topics: these would be read as something else
# Times the live evaluation can do arithmetic on (years 1 or 9999 overflow it)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_CAPACITY = 10_000_000
MAX_EVENT_SPAN = timedelta(days=7)  # doors open at most a week before the start


def _in_window(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("give the time zone (e.g. 2020-06-20T19:00:00-05:00)")
    if not EARLIEST <= ts < LATEST:
        raise ValueError(f"must lie in the years {EARLIEST.year}-{LATEST.year - 1}")
    return ts


class VenueFileError(ValueError):
    """A venue/event file or request cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SectionIn(_Strict):
    id: Id
    name: str = Field("", max_length=200)
    seats: StrictInt = Field(ge=0, le=1_000_000)
    cameras: list[Id] = Field(min_length=1, description="Cameras that see it; the first one owns it.")
    kind: Literal["seats", "standing", "queue"] = Field(
        "seats",
        description="seats/standing: inside, counted in attendance (`seats` is the standing capacity); "
        "queue: people outside about to come in (concourse, plaza, security lines).",
    )

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cams: list[str]) -> list[str]:
        if len(set(cams)) != len(cams):
            raise ValueError("a camera is listed twice")
        return cams


class CameraIn(_Strict):
    id: Id
    name: str = Field("", max_length=200)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, cid: str) -> str:
        return check_camera_id(cid)


class VenueIn(_Strict):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    sections: list[SectionIn] = Field(default_factory=list, max_length=10_000)
    cameras: list[CameraIn] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> VenueIn:
        ids = [s.id for s in self.sections]
        if len(set(ids)) != len(ids):
            raise ValueError("section ids must be unique")
        cams = {c.id for c in self.cameras}
        if len(cams) != len(self.cameras):
            raise ValueError("camera ids must be unique")
        for s in self.sections:
            missing = [c for c in s.cameras if c not in cams]
            if missing:
                raise ValueError(f"section {s.id}: unknown camera(s) {missing}; list them under cameras")
        return self


class OverflowIn(_Strict):
    name: str = Field("overflow", max_length=200)
    capacity: StrictInt = Field(gt=0, le=MAX_CAPACITY)
    deadline: datetime
    threshold: float = Field(1.0, gt=0, le=2, description="Overflow needed above capacity x threshold.")

    @field_validator("deadline")
    @classmethod
    def _window(cls, ts: datetime) -> datetime:
        return _in_window(ts)


class EventIn(_Strict):
    id: Id
    venue: Id
    name: str = Field(min_length=1, max_length=200)
    doors_open: datetime
    start: datetime
    capacity: StrictInt = Field(gt=0, le=MAX_CAPACITY)
    expected_show_up: float | None = Field(None, gt=0, le=1)
    overflow: OverflowIn | None = None
    timezone: str = Field(
        "UTC", max_length=64, description="IANA time zone of the venue, e.g. America/Chicago: clock times are shown in it."
    )
    notify: list[NotifyTarget | str] | None = Field(
        None,
        max_length=50,
        description="Organizers' notification targets: Apprise URLs (a string, or {url, label, kinds}); "
        "omitted: the targets already set (e.g. from the dashboard) are kept.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/Chicago or UTC)") from None
        return name

    @field_validator("notify")
    @classmethod
    def _targets(cls, items: list[NotifyTarget | str] | None) -> list[NotifyTarget | str] | None:
        return None if items is None else list(parse_targets(items))

    @field_validator("doors_open", "start")
    @classmethod
    def _aware(cls, ts: datetime) -> datetime:
        return _in_window(ts)

    @model_validator(mode="after")
    def _order(self) -> EventIn:
        if self.start <= self.doors_open:
            raise ValueError("start must be after doors_open")
        if self.start - self.doors_open > MAX_EVENT_SPAN:
            raise ValueError(f"doors_open must be at most {MAX_EVENT_SPAN.days} days before start")
        if self.overflow and not self.doors_open - timedelta(days=1) <= self.overflow.deadline <= self.start:
            raise ValueError("overflow.deadline must lie between a day before doors_open and start")
        return self


class VenueFile(_Strict):
    venues: list[VenueIn] = Field(default_factory=list)
    events: list[EventIn] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- storage
def save_venue(session: Session, v: VenueIn) -> Venue:
    """Create or replace a venue with its sections and cameras (live state of kept cameras stays)."""
    row = session.get(Venue, v.id)
    if row is None:
        row = Venue(id=v.id, name=v.name)
        session.add(row)
    row.name = v.name
    session.flush()
    session.execute(delete(Section).where(Section.venue_id == v.id))
    keep = {c.id for c in v.cameras}
    session.execute(delete(Camera).where(Camera.venue_id == v.id, Camera.id.not_in(keep)))
    for c in v.cameras:
        cam = session.get(Camera, (v.id, c.id))
        if cam is None:
            session.add(Camera(venue_id=v.id, id=c.id, name=c.name))
        else:
            cam.name = c.name
    for s in v.sections:
        session.add(Section(venue_id=v.id, id=s.id, name=s.name or s.id, seats=s.seats, cameras=s.cameras, kind=s.kind))
    return row


def save_event(session: Session, e: EventIn) -> Event:
    if session.get(Venue, e.venue) is None:
        raise VenueFileError(f"event {e.id}: unknown venue {e.venue!r}")
    row = session.get(Event, e.id)
    if row is None:
        row = Event(id=e.id)
        session.add(row)
    row.venue_id = e.venue
    row.name = e.name
    row.doors_open = e.doors_open
    row.start = e.start
    row.capacity = e.capacity
    row.expected_show_up = e.expected_show_up
    row.timezone = e.timezone
    o = e.overflow
    row.overflow_name = o.name if o else None
    row.overflow_capacity = o.capacity if o else None
    row.overflow_deadline = o.deadline if o else None
    if e.notify is not None:
        row.notify = [t.model_dump(mode="json") for t in parse_targets(e.notify)]
    elif row.notify is None:
        row.notify = []
    row.overflow_threshold = o.threshold if o else None
    return row


def load_file(session: Session, path: str | Path) -> VenueFile:
    """Load venues and events from a YAML file in one transaction."""
    p = Path(path)
    if not p.is_file():
        raise VenueFileError(f"{p}: file not found")
    try:
        data = expand_config_vars(yaml.safe_load(p.read_text()) or {})
        parsed = VenueFile.model_validate(data)
    except yaml.YAMLError as exc:
        raise VenueFileError(f"{p}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise VenueFileError(f"{p}: " + explain(exc)) from None
    except UnsetVariableError as exc:
        raise VenueFileError(f"{p}: {exc}") from None
    for v in parsed.venues:
        save_venue(session, v)
    session.flush()
    for e in parsed.events:
        save_event(session, e)
    session.commit()
    return parsed


def explain(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors())


def venue_dict(session: Session, venue: Venue) -> dict[str, Any]:
    sections = session.scalars(select(Section).where(Section.venue_id == venue.id)).all()
    cameras = session.scalars(select(Camera).where(Camera.venue_id == venue.id)).all()
    return {
        "id": venue.id,
        "name": venue.name,
        "seats": sum(s.seats for s in sections),
        "sections": [{"id": s.id, "name": s.name, "seats": s.seats, "cameras": s.cameras} for s in sections],
        "cameras": [{"id": c.id, "name": c.name} for c in cameras],
    }


def event_dict(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "venue": e.venue_id,
        "name": e.name,
        "doors_open": e.doors_open.isoformat(),
        "start": e.start.isoformat(),
        "capacity": e.capacity,
        "expected_show_up": e.expected_show_up,
        "timezone": e.timezone or "UTC",
        "overflow": overflow_dict(e),
    }


def overflow_dict(e: Any) -> dict[str, Any] | None:
    """The overflow event of an event (a DB row or the live copy) as JSON, or None when it has none."""
    if e.overflow_capacity is None:
        return None
    return {
        "name": e.overflow_name,
        "capacity": e.overflow_capacity,
        "deadline": e.overflow_deadline.isoformat() if e.overflow_deadline else None,
        "threshold": e.overflow_threshold,
    }
