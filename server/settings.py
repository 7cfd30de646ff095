"""Server settings: environment variables ``TURNOUT_*`` over an optional YAML file, validated.

``load_settings(path)`` returns `Settings` or raises `SettingsError` naming the field and the problem.
Environment variables win over the YAML file (``TURNOUT_CONFIG`` names the file when no path is given).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from turnout.paths import UnsetVariableError, expand_config_vars

DEFAULT_ARRIVAL_CURVE: list[tuple[float, float]] = [
    (-240.0, 0.0),
    (-180.0, 0.08),
    (-150.0, 0.18),
    (-120.0, 0.33),
    (-90.0, 0.50),
    (-60.0, 0.68),
    (-30.0, 0.86),
    (-10.0, 0.96),
    (0.0, 1.0),
]
"""Cumulative share of the final crowd in the venue, by minutes relative to the start time (a typical
arena concert/rally with doors open about 3-4 hours before; replace with the venue's own history)."""


class SettingsError(ValueError):
    """Settings cannot be used; ``str(err)`` names the field and what was expected."""


class Settings(BaseSettings):
    """All server settings. Each field is also read from ``TURNOUT_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="TURNOUT_", extra="forbid", validate_default=True, validate_assignment=True
    )

    # storage
    database_url: str = Field("sqlite:///var/turnout.db", description="SQLAlchemy URL (sqlite or postgresql).")
    database_schema: str | None = Field(None, description="PostgreSQL schema to use (default: public).")
    migrate_on_start: bool = True
    retention_days: float = Field(30.0, gt=0, description="Per-section time series older than this is deleted.")
    series_interval_s: float = Field(60.0, gt=0, le=3600, description="Time-series resolution (event time).")
    flush_interval_s: float = Field(2.0, gt=0, le=60, description="How often live state is saved (wall time).")

    # MQTT
    mqtt_enabled: bool = True
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_protocol: Literal["5", "3.1.1"] = Field("5", description="3.1.1 for brokers without MQTT v5.")
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: Path | None = None
    mqtt_tls_cert: Path | None = None
    mqtt_tls_key: Path | None = None
    mqtt_client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id of the server's persistent session. Default: turnout-server-<host>-<hash of "
        "database, venues and shared group>, the same after every restart (see `mqtt_session_id`).",
    )
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; a dead link is noticed in 1-2x this.")
    mqtt_session_expiry_s: int = Field(
        7 * 86400,
        ge=86400,
        le=0xFFFFFFFF,
        description="How long the broker keeps the server's session and queued messages while it is away (MQTT 5).",
    )
    mqtt_shared_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="MQTT v5 shared subscription group."
    )
    mqtt_venues: list[str] | None = Field(None, description="Only ingest these venues (default: all).")

    # live figures
    stale_after_s: float = Field(30.0, gt=0, description="A camera silent this long is stale.")
    evaluate: bool = Field(True, description="Run forecast, decision and alerts in this process.")
    tick_s: float = Field(1.0, gt=0, le=60, description="How often forecasts/decisions/alerts are evaluated.")
    evaluator_lease_s: float = Field(
        15.0, gt=0, le=3600,
        description="Evaluator lease in the database: with several `evaluate` processes, the holder evaluates and "
        "publishes; the others take over this long after it stops renewing (renewed every tick).",
    )
    evaluator_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="Lease holder id of this process. Default: mqtt_client_id, else a stable per-install id (no "
        "shared group) or host-pid-random; a process restarted with the same id takes its lease back at once.",
    )
    arrival_curve: list[tuple[float, float]] = Field(default_factory=lambda: list(DEFAULT_ARRIVAL_CURVE))
    expected_show_up: float = Field(0.6, gt=0, le=1, description="Share of plausible registrations who come.")
    show_up_spread: float = Field(0.5, ge=0, lt=1, description="Relative uncertainty of the show-up prior.")
    registrations_prior_weight: float = Field(
        0.8, ge=0, le=1, description="Probability that honest-looking registrations inform the final (before arrivals)."
    )
    forecast_fit_sigma: float = Field(
        0.10, gt=0, le=1, description="Log-residual allowed per fitted series point (how far crowds stray from curves)."
    )
    forecast_rate_sigma: float = Field(
        0.25, gt=0, le=2, description="Log-residual allowed for the arrivals between fitted points (crowds come in bursts)."
    )
    forecast_smooth_min: float = Field(
        5.0, ge=0, le=30, description="Counts are averaged over this many minutes before the forecast fits them (0: off)."
    )
    forecast_future_sigma: float = Field(
        0.15, ge=0, le=2, description="Relative doubt about the crowd still to come, times (1 - share in)."
    )
    cancel_max_risk: float = Field(
        0.02, gt=0, lt=0.5, description="Cancel the overflow only when P(final >= target) is at most this."
    )
    needed_min_probability: float = Field(
        0.8, gt=0.5, lt=1, description="Overflow needed when P(final >= target) is at least this."
    )
    min_fitted_points: int = Field(3, ge=1, le=100, description="No decision on fewer series points (10 min apart).")
    cancel_not_before: float = Field(
        0.5, ge=0, le=1, description="No cancel before this share of the doors-to-start window has passed."
    )
    min_share_in_for_decision: float = Field(
        0.2, ge=0, le=1, description="No decision while the forecast thinks less of the final crowd is in."
    )
    decision_hold_s: float = Field(300.0, ge=0, description="A cancel must be argued for this long (event time).")
    needed_hold_s: float = Field(
        120.0, ge=0, description="overflow_needed must be argued for this long (event time; cheap to undo)."
    )
    record_file: Path | None = Field(
        None, description="Append every ingested MQTT message here (`turnout replay` format), for post-event review."
    )
    config_watch: bool = Field(True, description="Reload venues/events changed in the database by other processes.")
    min_live_coverage: float = Field(
        0.9, ge=0, le=1, description="No new decision while live (non-stale) sections hold less of the seats."
    )
    rate_window_s: float = Field(300.0, gt=0, description="Window for the arrival rate (event time).")
    notify_attempts: int = Field(5, ge=1, le=50, description="Tries per alert and notification target.")
    notify_backoff_s: float = Field(
        2.0, gt=0, le=3600, description="Wait before the 2nd try; doubled each time (at most notify_backoff_max_s)."
    )
    notify_backoff_max_s: float = Field(300.0, gt=0, description="Longest wait between two tries.")

    # API
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics on GET /metrics.")
    metrics_token: SecretStr | None = Field(
        None, description="When set, /metrics requires `Authorization: Bearer <token>` (and nothing else opens it)."
    )
    public_read: bool = Field(True, description="Live figures, venues and events readable without a token.")
    login_token_ttl_h: float = Field(12.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    max_upload_mb: float = Field(200.0, gt=0, description="Largest registrations upload accepted (MB).")
    seat_min_px: float = Field(
        12.0, gt=0, le=1000, description="Seat maps: a chart seat smaller than this in a camera's image is unseen."
    )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
            raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        return url

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, url: str) -> str:
        if not url.startswith(("sqlite", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
        return url

    @field_validator("arrival_curve")
    @classmethod
    def _curve(cls, curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(curve) < 2:
            raise ValueError("arrival curve needs at least 2 points [minutes_to_start, share]")
        minutes = [m for m, _ in curve]
        shares = [s for _, s in curve]
        if minutes != sorted(minutes) or len(set(minutes)) != len(minutes):
            raise ValueError("arrival curve minutes must be strictly increasing")
        if shares != sorted(shares) or not all(0 <= s <= 1 for s in shares):
            raise ValueError("arrival curve shares must be non-decreasing within [0, 1]")
        if shares[-1] != 1.0:
            raise ValueError("arrival curve must end at share 1.0 (the final crowd)")
        return curve

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.mqtt_tls_cert is None) != (self.mqtt_tls_key is None):
            raise ValueError("mqtt_tls_cert and mqtt_tls_key must be given together")
        return self

    @property
    def lease_ttl_s(self) -> float:
        """The evaluator lease's length: ``evaluator_lease_s``, at least two ticks (it is renewed every tick)."""
        return max(self.evaluator_lease_s, 2 * self.tick_s)

    @property
    def mqtt_host(self) -> str:
        return urlparse(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        u = urlparse(self.mqtt_url)
        return u.port or (8883 if u.scheme in ("mqtts", "ssl") else 1883)

    @property
    def mqtt_session_id(self) -> str:
        """The client id the server connects with: `mqtt_client_id`, or one derived from this installation.

        Derived from the host name and a hash of the database, schema, venues and shared group: stable across
        restarts (the broker keeps the session and its queued messages), different for two servers with
        different databases or venue sets. Several processes on one host sharing a database and a shared
        group need their own `mqtt_client_id` each.
        """
        if self.mqtt_client_id:
            return self.mqtt_client_id
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40] or "host"
        key = "|".join(
            [
                self.database_url,
                self.database_schema or "",
                ",".join(sorted(self.mqtt_venues)) if self.mqtt_venues is not None else "*",
                self.mqtt_shared_group or "",
            ]
        )
        return f"turnout-server-{host}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"

    @property
    def mqtt_tls(self) -> bool:
        return urlparse(self.mqtt_url).scheme in ("mqtts", "ssl") or self.mqtt_tls_ca is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then values passed in (the YAML file), so TURNOUT_* overrides the file.
        return env_settings, init_settings


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the YAML file (``path`` or ``$TURNOUT_CONFIG``), the environment and ``overrides``.

    ``overrides`` win over both (used by tests and the CLI).
    """
    data: dict[str, Any] = {}
    path = path or os.environ.get("TURNOUT_CONFIG")
    source = "environment"
    if path:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise SettingsError(f"settings file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:  # one line: where and what (PyYAML's own text spans several)
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SettingsError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{p}: expected a mapping of setting: value")
        try:
            data = expand_config_vars(loaded)  # type: ignore[assignment]
        except UnsetVariableError as exc:
            raise SettingsError(f"{p}: {exc}") from None
    try:
        settings = Settings(**data)
        for key, value in overrides.items():
            setattr(settings, key, value)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, source)) from None
    return settings


def _explain(exc: ValidationError, source: str) -> str:
    """One line (a service log shows it whole): the source, then each field with its variable and the problem."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(settings)"
        problems.append(f"{field} (TURNOUT_{str(err['loc'][0]).upper() if err['loc'] else ''}): {err['msg']}")
    return f"invalid settings ({source}): " + "; ".join(problems)
