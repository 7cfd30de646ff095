"""Prometheus metrics of the server (``GET /metrics``), read from the hub's own state at scrape time.

Most figures are not copied anywhere: a custom collector reads ``hub.counters`` (ingest outcomes),
``hub.failures`` (evaluation failures), the live events and cameras, the broadcaster and the notifier when
Prometheus scrapes. Only what the hub does not keep is measured here: ingest lag (an observer on applied
messages), tick duration (the tick loop) and database write latency (SQLAlchemy cursor events).

Access: with ``metrics_token`` set, only ``Authorization: Bearer <metrics_token>`` may read (Prometheus
``authorization.credentials``); without it, /metrics is read like the live figures (open with
``public_read``, otherwise any API token), since it shows nothing the live API does not (docs/server.md).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event

from server.auth import current_user
from turnout.contract import Occupancy

if TYPE_CHECKING:
    from server.db.session import Database
    from server.live import LiveHub

APPLIED = {"accepted": "occupancy", "status": "status"}
"""hub.counters keys that count applied messages (by kind)."""
NOT_REJECTIONS = {"received", "new_stream", *APPLIED}
"""hub.counters keys that are neither applied nor rejected (totals and notes)."""
DECISION_STATES = ("undecided", "cancel_overflow", "overflow_needed")
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class ServerMetrics:
    """The registry of one app: the hub collector plus three histograms."""

    def __init__(self, hub: LiveHub, db: Database, mqtt_connected: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hub = hub
        self.ingest_lag = Histogram(
            "turnout_ingest_lag_seconds",
            "Applied occupancy: receive time minus the message's ts (edge clock to server).",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.tick = Histogram(
            "turnout_tick_duration_seconds",
            "Duration of one evaluation tick (forecast, decision, alerts, saving).",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.db_write = Histogram(
            "turnout_db_write_seconds",
            "Duration of one INSERT/UPDATE/DELETE statement.",
            ["op"],
            buckets=DB_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(HubCollector(hub, mqtt_connected))
        hub.observe(self._applied)
        _time_writes(db, self.db_write)

    def _applied(self, msg: Occupancy) -> None:
        self.ingest_lag.observe(max(0.0, (self.hub.clock.now() - msg.ts).total_seconds()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HubCollector(Collector):
    """Reads the hub's counters and live state at scrape time (nothing duplicated)."""

    def __init__(self, hub: LiveHub, mqtt_connected: Any = None) -> None:
        self.hub = hub
        self.mqtt_connected = mqtt_connected

    def collect(self) -> Iterator[Any]:
        hub = self.hub
        counters = dict(hub.counters)
        applied = CounterMetricFamily("turnout_messages_applied", "MQTT messages applied to the live state.", labels=["kind"])
        for key, kind in APPLIED.items():
            applied.add_metric([kind], counters.get(key, 0))
        yield applied
        rejected = CounterMetricFamily(
            "turnout_messages_rejected", "MQTT messages not applied, by reason.", labels=["reason"]
        )
        for key, n in sorted(counters.items()):
            if key not in NOT_REJECTIONS:
                rejected.add_metric([key], n)
        yield rejected
        yield CounterMetricFamily("turnout_messages_received", "MQTT messages received.", value=counters.get("received", 0))
        failures = CounterMetricFamily(
            "turnout_evaluation_failures", "Failed evaluations per event.", labels=["event"]
        )
        for eid, n in sorted(hub.failures.items()):
            failures.add_metric([eid], n)
        yield failures
        yield from self._events()
        yield from self._cameras()
        yield GaugeMetricFamily("turnout_sse_clients", "Open server-sent-event streams.", value=hub.broadcast.listeners)
        yield from self._alerts()
        if self.mqtt_connected is not None:
            yield GaugeMetricFamily(
                "turnout_mqtt_connected", "1 while the MQTT link is up.", value=1.0 if self.mqtt_connected() else 0.0
            )
        lease = getattr(hub, "lease", None)
        evaluating = hub.settings.evaluate and (lease is None or lease.held)
        yield GaugeMetricFamily(
            "turnout_evaluator_active", "1 when this process evaluates and publishes (holds the lease).",
            value=1.0 if evaluating else 0.0,
        )
        if lease is not None:
            yield CounterMetricFamily(
                "turnout_evaluator_takeovers", "Times this process took the evaluator lease.", value=lease.takeovers
            )

    def _events(self) -> Iterator[Any]:
        state = GaugeMetricFamily(
            "turnout_decision_state", "1 for the event's current overflow decision state.", labels=["event", "state"]
        )
        p_reach = GaugeMetricFamily(
            "turnout_p_reach_target", "Chance that the final attendance reaches the overflow target.", labels=["event"]
        )
        attendance = GaugeMetricFamily("turnout_attendance", "Last evaluated attendance.", labels=["event"])
        with self.hub.state.lock:
            rows = [(eid, e.decision, e.forecast, e.history[-1] if e.history else None) for eid, e in self.hub.events.items()]
        for eid, decision, forecast, last in sorted(rows, key=lambda r: r[0]):
            if decision is not None:
                for st in DECISION_STATES:
                    state.add_metric([eid, st], 1.0 if decision.state.value == st else 0.0)
            if forecast and forecast.get("p_reach_target") is not None:
                p_reach.add_metric([eid], float(forecast["p_reach_target"]))
            if last is not None:
                attendance.add_metric([eid], last.attendance)
        yield from (state, p_reach, attendance)

    def _cameras(self) -> Iterator[Any]:
        age = GaugeMetricFamily(
            "turnout_camera_last_seen_age_seconds", "Seconds since the camera's last message.", labels=["venue", "camera"]
        )
        stale = GaugeMetricFamily(
            "turnout_camera_stale", "1 when silent longer than stale_after_s or offline.", labels=["venue", "camera"]
        )
        now: datetime = self.hub.clock.now()
        limit = self.hub.settings.stale_after_s
        with self.hub.state.lock:
            cams = [(v.id, c.id, c.last_seen, c.state) for v in self.hub.venues.values() for c in v.cameras.values()]
        for vid, cid, seen, cam_state in cams:
            if seen is not None:
                age.add_metric([vid, cid], max(0.0, (now - seen).total_seconds()))
            silent = seen is None or (now - seen).total_seconds() > limit
            stale.add_metric([vid, cid], 1.0 if silent or cam_state == "offline" else 0.0)
        yield from (age, stale)

    def _alerts(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "turnout_alerts_published", "Alert changes published on MQTT by this process.", value=self.hub.alerts.published
        )
        notifier = self.hub.notifier
        if notifier is None:
            return
        with notifier._lock:
            deliveries = [d for items in notifier._log.values() for d in items.values()]
        by_status = GaugeMetricFamily(
            "turnout_alert_deliveries", "Organizer notifications in the delivery log, by status.", labels=["status"]
        )
        for st in ("queued", "retrying", "sent", "failed"):
            by_status.add_metric([st], sum(1 for d in deliveries if d.status == st))
        yield by_status
        yield GaugeMetricFamily(
            "turnout_alert_delivery_failed_attempts",
            "Failed sending attempts of the deliveries in the log (retries and final failures).",
            value=sum(d.attempts - (1 if d.status == "sent" else 0) for d in deliveries),
        )


def _time_writes(db: Database, histogram: Histogram) -> None:
    """Observe every INSERT/UPDATE/DELETE statement's duration."""

    @event.listens_for(db.engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("turnout_t0", []).append(time.perf_counter())

    @event.listens_for(db.engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        stack = conn.info.get("turnout_t0")
        if not stack:
            return
        elapsed = time.perf_counter() - stack.pop()
        op = statement.lstrip()[:6].upper()
        if op in ("INSERT", "UPDATE", "DELETE"):
            histogram.labels(op.lower()).observe(elapsed)


router = APIRouter(tags=["health"])


def metrics_access(request: Request) -> None:
    """``metrics_token`` when set; otherwise the rule of the live figures (public_read or an API token)."""
    settings = request.app.state.settings
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "metrics token required", {"WWW-Authenticate": "Bearer"})
        return
    if settings.public_read:
        return
    with request.app.state.db.session() as session:
        if current_user(request, session) is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required", {"WWW-Authenticate": "Bearer"})


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access)])
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
