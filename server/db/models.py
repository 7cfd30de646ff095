"""SQLAlchemy 2 models. Times are stored in UTC; `UTCDateTime` gives them back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Turnout stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Venue(Base):
    __tablename__ = "venues"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Section(Base):
    """A seating section; ``cameras[0]`` owns it, the others take over when the owner is stale."""

    __tablename__ = "sections"
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    seats: Mapped[int] = mapped_column(Integer)
    cameras: Mapped[list[str]] = mapped_column(default=list)
    kind: Mapped[str] = mapped_column(String(16), default="seats", server_default="seats")
    """``seats`` | ``standing`` (inside: counted in attendance) | ``queue`` (outside: people about to come in)."""


class Camera(Base):
    __tablename__ = "cameras"
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    last_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_stream: Mapped[str | None] = mapped_column(String(64), default=None)
    prev_stream: Mapped[str | None] = mapped_column(String(64), default=None)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    doors_open: Mapped[datetime]
    start: Mapped[datetime]
    capacity: Mapped[int] = mapped_column(Integer)
    expected_show_up: Mapped[float | None] = mapped_column(Float, default=None)
    overflow_name: Mapped[str | None] = mapped_column(String(200), default=None)
    overflow_capacity: Mapped[int | None] = mapped_column(Integer, default=None)
    overflow_deadline: Mapped[datetime | None] = mapped_column(default=None)
    overflow_threshold: Mapped[float | None] = mapped_column(Float, default=None)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    """IANA zone of the venue (``America/Chicago``): clock times on the dashboard and in reports."""
    notify: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Organizers' notification targets: ``[{url, label, kinds}]`` (Apprise URLs; secrets: admin only)."""


class Registration(Base):
    __tablename__ = "registrations"
    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str | None] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    ticket_type: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime | None]
    duplicate: Mapped[bool] = mapped_column(Boolean)
    disposable: Mapped[bool] = mapped_column(Boolean)
    # the import generation the row belongs to; only the summary's current `import_id` is visible
    import_id: Mapped[str | None] = mapped_column(String(32), default=None)
    __table_args__ = (Index("ix_registrations_event_import", "event_id", "import_id"),)


class RegistrationSummary(Base):
    """Totals of the last successful import of an event's registrations."""

    __tablename__ = "registration_summaries"
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    total: Mapped[int] = mapped_column(Integer)
    by_ticket_type: Mapped[dict[str, Any]]
    duplicates: Mapped[int] = mapped_column(Integer)
    disposable: Mapped[int] = mapped_column(Integer)
    burst: Mapped[int] = mapped_column(Integer)
    suspect: Mapped[int] = mapped_column(Integer)
    suspect_share: Mapped[float] = mapped_column(Float)
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(300))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)
    import_id: Mapped[str | None] = mapped_column(String(32), default=None)


class SectionState(Base):
    """Latest count of a section as seen by one camera (what the live view is rebuilt from)."""

    __tablename__ = "section_states"
    venue_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    section_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    occupied: Mapped[int] = mapped_column(Integer)
    people: Mapped[int] = mapped_column(Integer)
    seats: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime]
    received_at: Mapped[datetime]
    __table_args__ = (ForeignKeyConstraint(["venue_id"], ["venues.id"], ondelete="CASCADE"),)


class SectionSample(Base):
    """Per-section time series (one row per section and interval), kept for `retention_days`."""

    __tablename__ = "section_samples"
    venue_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    section_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    occupied: Mapped[int] = mapped_column(Integer)
    people: Mapped[int] = mapped_column(Integer)
    __table_args__ = (
        ForeignKeyConstraint(["venue_id"], ["venues.id"], ondelete="CASCADE"),
        Index("ix_section_samples_ts", "ts"),
    )


class EventSample(Base):
    """Per-event time series of the live figures."""

    __tablename__ = "event_samples"
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    attendance: Mapped[int] = mapped_column(Integer)
    people: Mapped[int] = mapped_column(Integer)
    forecast: Mapped[float | None] = mapped_column(Float)
    forecast_low: Mapped[float | None] = mapped_column(Float)
    forecast_high: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str | None] = mapped_column(String(32))
    queue: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    coverage: Mapped[float | None] = mapped_column(Float, default=None)
    p_reach_target: Mapped[float | None] = mapped_column(Float, default=None)


class Decision(Base):
    """The overflow decision of an event, with its hysteresis state (survives restarts)."""

    __tablename__ = "decisions"
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime]
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    override_by: Mapped[str | None] = mapped_column(String(64), default=None)
    candidate: Mapped[str | None] = mapped_column(String(32), default=None)
    candidate_since: Mapped[datetime | None] = mapped_column(default=None)
    reversed_from: Mapped[str | None] = mapped_column(String(32), default=None)
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AlertRow(Base):
    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    venue_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), default=None)


class AlertDelivery(Base):
    """One alert change sent to one notification target: its attempts and outcome (server.notify)."""

    __tablename__ = "alert_deliveries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(255), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    alert_state: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    target_url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class DecisionChange(Base):
    """One change of an event's overflow decision (state, freeze, override): the report's decision timeline."""

    __tablename__ = "decision_changes"
    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(32))
    previous: Mapped[str | None] = mapped_column(String(32), default=None)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    reversed_from: Mapped[str | None] = mapped_column(String(32), default=None)
    by: Mapped[str | None] = mapped_column(String(64), default=None)
    """The operator who set it (override or hand-back to automatic); None: the automatic decision."""
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AlertChange(Base):
    """One change of an alert (raised, changed, cleared) or its acknowledgement: the report's alert log."""

    __tablename__ = "alert_changes"
    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(255), index=True)
    venue_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(64), default=None)
    ts: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(16))
    """``raised`` | ``changed`` | ``cleared`` | ``acknowledged``."""
    state: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    by: Mapped[str | None] = mapped_column(String(64), default=None)


class EvaluatorLease(Base):
    """Who evaluates and publishes (server.lease): renewed every tick by compare-and-set; times are the
    database's own clock in Unix seconds, so the hosts' clocks do not matter."""

    __tablename__ = "evaluator_lease"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
    term: Mapped[int] = mapped_column(Integer, default=1)
    """Grows by one each time another holder takes the lease."""


class SeatChart(Base):
    """A venue's seating chart (server.seatmap): where its seats are on the plan; replaced as a whole."""

    __tablename__ = "seat_charts"
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True)
    seats: Mapped[int] = mapped_column(Integer)
    polygons: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Section outlines on the plan, ``{section: [[x, y], ...]}``, where the chart gives them."""
    source_name: Mapped[str] = mapped_column(String(300))
    source_sha256: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)
    imported_by: Mapped[str | None] = mapped_column(String(64), default=None)


class ChartSeatRow(Base):
    """One seat of a venue's chart: section, row, seat label and position on the plan (y grows down)."""

    __tablename__ = "chart_seats"
    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("seat_charts.venue_id", ondelete="CASCADE"))
    section: Mapped[str] = mapped_column(String(64))
    row: Mapped[str] = mapped_column(String(16))
    seat: Mapped[str] = mapped_column(String(16))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ux_chart_seats_key", "venue_id", "section", "row", "seat", unique=True),)


class CameraSeatMap(Base):
    """The chart seats one camera sees: the homography from its point pairs and the seats projected."""

    __tablename__ = "camera_seatmaps"
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pairs: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{section or "": {"plan": [[x, y], ...], "image": [[u, v], ...]}}`` as given by the operator."""
    homography: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{section or "": 3x3 plan -> image matrix}`` ("": the camera's own pairs)."""
    frame_w: Mapped[int] = mapped_column(Integer)
    frame_h: Mapped[int] = mapped_column(Integer)
    min_seat_px: Mapped[float] = mapped_column(Float)
    seen: Mapped[list[Any]] = mapped_column(JSON)
    """Labels ``section/row/seat`` of the seats projected into the camera's layout."""
    unseen: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64), default=None)
