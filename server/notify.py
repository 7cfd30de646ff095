"""Alerts to organizers where they are: Apprise URLs per event (e-mail, SMS gateways, Slack, Teams, Telegram,
webhooks, ...), sent off the tick thread with retries and exponential backoff, every attempt logged per alert.

The tick thread only hands an alert change to `Notifier.alert_changed` (an in-memory queue); a scheduler thread
and a small pool of sender threads do the sending and write the `AlertDelivery` rows. A slow or failing target
therefore never delays the tick, the MQTT alert (published before) or the other targets.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.clock import Clock
from server.db.models import AlertDelivery, Event
from server.db.session import Database
from turnout.contract import AlertKind

log = logging.getLogger(__name__)

DeliveryStatus = Literal["queued", "retrying", "sent", "failed"]
TEST_KIND = "notify_test"
KIND_TITLES = {
    "overflow_decision": "Overflow decision",
    "section_over_capacity": "Section over capacity",
    "camera_stale": "Camera not updating",
    "camera_offline": "Camera offline",
    TEST_KIND: "Test notification",
}


def _apprise_plugin(url: str) -> Any:
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def masked_url(url: str) -> str:
    """The URL with passwords and tokens hidden and Apprise's options dropped (safe to show to operators)."""
    plugin = _apprise_plugin(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    return str(plugin.url(privacy=True)).split("?", 1)[0]


class NotifyTarget(BaseModel):
    """One organizer channel of an event: an Apprise URL (https://github.com/caronc/apprise/wiki)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=4, max_length=2000, description="Apprise URL, e.g. mailto://..., json://..., slack://...")
    label: str = Field("", max_length=100, description="Shown in the delivery log instead of the (masked) URL.")
    kinds: list[AlertKind] = Field(
        default_factory=lambda: [AlertKind.OVERFLOW_DECISION],
        min_length=1,
        description="Alert kinds sent to this target (default: the overflow decision).",
    )

    @field_validator("url")
    @classmethod
    def _usable(cls, url: str) -> str:
        url = url.strip()
        if _apprise_plugin(url) is None:
            raise ValueError("not a URL Apprise can send to (see https://github.com/caronc/apprise/wiki)")
        return url

    @property
    def name(self) -> str:
        return self.label or masked_url(self.url)


def parse_targets(items: Iterable[Any]) -> list[NotifyTarget]:
    """Targets from config: a plain string is a URL with defaults."""
    return [NotifyTarget(url=i) if isinstance(i, str) else NotifyTarget.model_validate(i) for i in items]


class DeliveryOut(BaseModel):
    """One alert change sent to one target (the delivery log)."""

    id: str
    alert_id: str
    event_id: str | None
    alert_state: str
    target: str
    target_url: str = Field(description="Masked: no passwords or tokens.")
    status: DeliveryStatus
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class _Job:
    delivery: DeliveryOut
    url: str
    title: str
    body: str
    severity: str


class Notifier:
    """Sends alert changes to the event's targets; `log` gives the delivery log per alert."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        attempts: int = 5,
        backoff_s: float = 2.0,
        backoff_max_s: float = 300.0,
        workers: int = 4,
        keep_per_alert: int = 50,
    ) -> None:
        self.db, self.clock = db, clock
        self.attempts, self.backoff_s, self.backoff_max_s = attempts, backoff_s, backoff_max_s
        self.keep_per_alert = keep_per_alert
        self._targets: dict[str, list[NotifyTarget]] = {}
        self._names: dict[str, str] = {}
        self._log: dict[str, dict[str, DeliveryOut]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = 0
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="notify")
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------------------- config
    def load(self, session: Session) -> None:
        """Targets of every event, and the saved delivery log (unfinished ones are marked failed)."""
        targets, names = {}, {}
        for ev in session.scalars(select(Event)):
            names[ev.id] = ev.name
            try:
                targets[ev.id] = parse_targets(ev.notify or [])
            except ValueError:
                log.exception("event %s: unusable notification targets ignored", ev.id)
        rows = session.scalars(select(AlertDelivery).order_by(AlertDelivery.created_at)).all()
        now = self.clock.now()
        logged: dict[str, dict[str, DeliveryOut]] = {}
        for row in rows:
            if row.status in ("queued", "retrying") and not self._pending(row.id):
                row.status, row.error, row.updated_at = "failed", "server restarted before delivery", now
            logged.setdefault(row.alert_id, {})[row.id] = DeliveryOut.model_validate(row, from_attributes=True)
        session.commit()
        with self._lock:
            self._targets, self._names = targets, names
            for alert_id, items in logged.items():
                self._log.setdefault(alert_id, {}).update(
                    {k: v for k, v in items.items() if k not in self._log.get(alert_id, {})}
                )

    def _pending(self, delivery_id: str) -> bool:
        with self._lock:
            return any(job.delivery.id == delivery_id for _, _, job in self._heap)

    def targets(self, event_id: str) -> list[NotifyTarget]:
        with self._lock:
            return list(self._targets.get(event_id, []))

    def set_targets(self, event_id: str, targets: list[NotifyTarget], name: str | None = None) -> None:
        with self._lock:
            self._targets[event_id] = list(targets)
            if name:
                self._names[event_id] = name

    # ------------------------------------------------------------------------------ sending
    def alert_changed(self, alert: dict[str, Any]) -> list[str]:
        """Queue an alert change for the event's targets that take its kind. Called on the tick thread: no I/O.

        Returns the ids of the deliveries queued.
        """
        event_id = alert.get("event")
        if not event_id:
            return []
        kind = alert["kind"]
        with self._lock:
            targets = [t for t in self._targets.get(event_id, []) if kind == TEST_KIND or kind in t.kinds]
            event_name = self._names.get(event_id, event_id)
        if not targets:
            return []
        title, body = render(alert, event_name)
        now = self.clock.now()
        ids = []
        for t in targets:
            delivery = DeliveryOut(
                id=uuid.uuid4().hex,
                alert_id=alert["id"],
                event_id=event_id,
                alert_state=alert["state"],
                target=t.name,
                target_url=masked_url(t.url),
                status="queued",
                attempts=0,
                error=None,
                created_at=now,
                updated_at=now,
                delivered_at=None,
            )
            self._remember(delivery)
            self._schedule(_Job(delivery, t.url, title, body, alert.get("severity", "info")), 0.0)
            ids.append(delivery.id)
        return ids

    def send_test(self, event_id: str, user: str) -> tuple[str, list[str]]:
        """A test message to every target of the event: its alert id (the log is under it) and delivery ids."""
        alert = {
            "id": f"{event_id}:{TEST_KIND}",
            "event": event_id,
            "kind": TEST_KIND,
            "state": "test",
            "severity": "info",
            "message": f"Test notification sent by {user} from the Turnout dashboard: this channel receives alerts.",
            "figures": {},
        }
        return alert["id"], self.alert_changed(alert)

    def log(self, alert_id: str) -> list[DeliveryOut]:
        """The delivery log of one alert, oldest first."""
        with self._lock:
            return sorted(self._log.get(alert_id, {}).values(), key=lambda d: (d.created_at, d.target))

    def event_log(self, session: Session, event_id: str) -> list[DeliveryOut]:
        rows = session.scalars(
            select(AlertDelivery).where(AlertDelivery.event_id == event_id).order_by(AlertDelivery.created_at)
        )
        return [DeliveryOut.model_validate(r, from_attributes=True) for r in rows]

    def idle(self) -> bool:
        """Nothing waiting or retrying (for tests and shutdown)."""
        with self._lock:
            busy = any(d.status in ("queued", "retrying") for items in self._log.values() for d in items.values())
            return not self._heap and not busy

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._wake:  # usable again (an app's lifespan may start twice in tests)
            self._heap.clear()
            self._thread, self._stopping = None, False
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="notify")

    def _remember(self, delivery: DeliveryOut) -> None:
        with self._lock:
            items = self._log.setdefault(delivery.alert_id, {})
            items[delivery.id] = delivery
            if len(items) > self.keep_per_alert:
                for old in sorted(items.values(), key=lambda d: d.created_at)[: len(items) - self.keep_per_alert]:
                    items.pop(old.id, None)

    def _schedule(self, job: _Job, delay_s: float) -> None:
        with self._wake:
            if self._stopping:
                return
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay_s, self._seq, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notify-scheduler", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, job = heapq.heappop(self._heap)
            self._pool.submit(self._attempt, job)

    def _attempt(self, job: _Job) -> None:
        ok, error = _send(job)
        d = job.delivery
        attempts = d.attempts + 1
        now = self.clock.now()
        if ok:
            d = replace_delivery(d, status="sent", attempts=attempts, error=None, updated_at=now, delivered_at=now)
        elif attempts < self.attempts:
            d = replace_delivery(d, status="retrying", attempts=attempts, error=error, updated_at=now)
        else:
            d = replace_delivery(d, status="failed", attempts=attempts, error=error, updated_at=now)
        self._remember(d)
        self._save(d)
        if d.status == "retrying":
            self._schedule(replace(job, delivery=d), min(self.backoff_max_s, self.backoff_s * 2 ** (attempts - 1)))
        log.log(
            logging.INFO if ok else logging.WARNING,
            "notification %s -> %s: %s (try %d)%s", d.alert_id, d.target, d.status, attempts, f": {error}" if error else "",
        )

    def _save(self, d: DeliveryOut) -> None:
        try:
            with self.db.session() as s:
                s.merge(AlertDelivery(**d.model_dump()))
                s.commit()
        except Exception:  # the in-memory log still shows it; never let the log stop the sending
            log.exception("could not save delivery %s", d.id)


def replace_delivery(d: DeliveryOut, **changes: Any) -> DeliveryOut:
    return d.model_copy(update=changes)


def render(alert: dict[str, Any], event_name: str) -> tuple[str, str]:
    """Title and body of the message: words, no codes."""
    kind = KIND_TITLES.get(alert["kind"], alert["kind"].replace("_", " ").capitalize())
    state = alert["state"]
    prefix = "Cleared: " if state == "cleared" else ""
    title = f"Turnout · {event_name} · {prefix}{kind}"
    body = alert.get("message") or ""
    if state == "cleared":
        body = f"Cleared. {body}"
    return title, body


def _send(job: _Job) -> tuple[bool, str | None]:
    import apprise

    kind = {"warning": apprise.NotifyType.WARNING, "critical": apprise.NotifyType.FAILURE}.get(
        job.severity, apprise.NotifyType.INFO
    )
    sender = apprise.Apprise()
    if not sender.add(job.url):
        return False, "not a URL Apprise can send to"
    try:
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = bool(sender.notify(title=job.title, body=job.body, notify_type=kind))
            text = captured.getvalue().strip()
    except Exception as exc:  # a plugin bug must not kill the sender thread
        return False, f"{type(exc).__name__}: {exc}"
    if ok:
        return True, None
    return False, (text.splitlines()[-1][:500] if text else "the service refused or could not be reached")
