"""Venue simulator for the demo: SIMULATED cameras publishing the rest of an arena over MQTT.

Everything it publishes is labelled as simulated: camera ids start with ``sim-`` and section ids with
``sim-``; `docs/dashboard.md` and the dashboard say so. Attendance follows a Tulsa-like arrival curve
(cumulative share of the final crowd by minutes before the start) towards a chosen final attendance, in
simulated event time from a `SimClock` that runs `speed` times faster than the wall clock.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from turnout import contract

log = logging.getLogger(__name__)

SIM_PREFIX = "sim-"

TULSA_CURVE: list[tuple[float, float]] = [
    (-240.0, 0.0),
    (-180.0, 0.06),
    (-150.0, 0.15),
    (-120.0, 0.30),
    (-90.0, 0.47),
    (-60.0, 0.69),
    (-30.0, 0.88),
    (-10.0, 0.97),
    (0.0, 1.0),
]
"""Cumulative share of the final crowd in by minutes relative to the start (doors 4 h before)."""


class SimClock:
    """Event time that runs `speed` times faster than the wall clock, from `start` at creation."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def now(self) -> datetime:
        """The same as calling the clock (the server's `Clock` protocol)."""
        return self()

    def wall_seconds_until(self, when: datetime) -> float:
        """Wall-clock seconds until event time `when` (negative if past)."""
        return (when - self()).total_seconds() / self.speed


def curve_share(curve: Sequence[tuple[float, float]], minutes_to_start: float) -> float:
    """Linear interpolation of the cumulative arrival share at `minutes_to_start` (negative before)."""
    xs = [m for m, _ in curve]
    if minutes_to_start <= xs[0]:
        return curve[0][1]
    if minutes_to_start >= xs[-1]:
        return curve[-1][1]
    i = bisect.bisect_right(xs, minutes_to_start)
    (x0, y0), (x1, y1) = curve[i - 1], curve[i]
    return y0 + (y1 - y0) * (minutes_to_start - x0) / (x1 - x0)


@dataclass(frozen=True)
class SimSection:
    id: str
    seats: int
    weight: float = 1.0
    """Relative pull of the section (lower bowl fills before the upper tiers; varies within a tier)."""
    lead_min: float = 0.0
    """Minutes this section's crowd runs ahead of (positive) or behind the venue's curve."""


@dataclass(frozen=True)
class SimCamera:
    id: str
    sections: tuple[SimSection, ...]


@dataclass
class ArenaPlan:
    """The simulated part of a venue and how many of the final crowd sit in it."""

    cameras: list[SimCamera]
    final_attendance: int
    curve: list[tuple[float, float]] = field(default_factory=lambda: list(TULSA_CURVE))

    @property
    def sections(self) -> list[SimSection]:
        return [s for c in self.cameras for s in c.sections]

    @property
    def seats(self) -> int:
        return sum(s.seats for s in self.sections)

    def occupancy(self, minutes_to_start: float, rng: random.Random | None = None) -> dict[str, int]:
        """Occupied seats per section when `minutes_to_start` minutes remain (negative: before start).

        The total follows the curve; each section fills at its own pace (``lead_min``) and pull
        (``weight``), with ±2 % noise per reading, so sections of one tier never show the same count.
        """
        total = self.final_attendance * curve_share(self.curve, minutes_to_start)
        sections = self.sections
        weights = [
            s.weight * s.seats * max(curve_share(self.curve, minutes_to_start + s.lead_min), 1e-3) for s in sections
        ]
        wsum = sum(weights) or 1.0
        counts: dict[str, int] = {}
        for sec, w in zip(sections, weights, strict=True):
            noise = 1.0 + (rng.uniform(-0.02, 0.02) if rng else 0.0)
            counts[sec.id] = max(0, min(sec.seats, round(total * w / wsum * noise)))
        return counts


def arena_plan(
    total_seats: int, final_attendance: int, cameras: int = 8, per_camera: int = 3, seed: int = 11
) -> ArenaPlan:
    """A bowl of `cameras` x `per_camera` simulated sections with `total_seats` seats in all.

    Lower-bowl sections (the first of each camera) draw more of the crowd than the upper tiers; within a
    tier each section has its own pull (±30 %) and pace (up to 20 min ahead or behind), drawn from `seed`.
    """
    rng = random.Random(seed)
    if total_seats < cameras * per_camera:
        raise ValueError(f"total_seats {total_seats} too small for {cameras * per_camera} sections")
    n = cameras * per_camera
    base, extra = divmod(total_seats, n)
    cams: list[SimCamera] = []
    k = 0
    for c in range(cameras):
        secs = []
        for tier in range(per_camera):
            seats = base + (1 if k < extra else 0)
            pull = 1.6 / (1 + tier) * rng.uniform(0.7, 1.3)
            secs.append(SimSection(f"{SIM_PREFIX}s{100 * (tier + 1) + c + 1}", seats, pull, rng.uniform(-20.0, 20.0)))
            k += 1
        cams.append(SimCamera(f"{SIM_PREFIX}cam{c + 1:02d}", tuple(secs)))
    return ArenaPlan(cams, min(final_attendance, total_seats))


class VenueSimulator:
    """Publishes occupancy (and retained online status) for every simulated camera, once a wall second."""

    def __init__(
        self,
        plan: ArenaPlan,
        *,
        venue: str,
        start_time: datetime,
        clock: Callable[[], datetime],
        host: str = "127.0.0.1",
        port: int = 1883,
        interval_s: float = 1.0,
        seed: int = 7,
    ) -> None:
        self.plan = plan
        self.venue = venue
        self.start_time = start_time
        self.clock = clock
        self.interval_s = interval_s
        self._rng = random.Random(seed)
        self._seq = dict.fromkeys((c.id for c in plan.cameras), 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: dict[str, mqtt.Client] = {}
        self._host, self._port = host, port
        self.published = 0

    def start(self) -> VenueSimulator:
        for cam in self.plan.cameras:
            self._clients[cam.id] = self._connect(cam.id)
        self._thread = threading.Thread(target=self._run, name="venue-simulator", daemon=True)
        self._thread.start()
        return self

    def _connect(self, camera: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"turnout-sim-{self.venue}-{camera}",
            protocol=mqtt.MQTTv311,
        )
        offline = contract.Status(
            venue=self.venue, camera=camera, state=contract.CameraState.OFFLINE, ts=self.clock(),
            reason="simulated camera stopped",
        )  # fmt: skip
        client.will_set(contract.status_topic(self.venue, camera), offline.to_json(), qos=1, retain=True)
        client.connect(self._host, self._port, keepalive=30)
        client.loop_start()
        online = contract.Status(
            venue=self.venue, camera=camera, state=contract.CameraState.ONLINE, ts=self.clock(),
            reason="SIMULATED camera (demo)",
        )  # fmt: skip
        client.publish(contract.status_topic(self.venue, camera), online.to_json(), qos=1, retain=True)
        return client

    def publish_once(self) -> None:
        now = self.clock()
        minutes = (now - self.start_time).total_seconds() / 60.0
        counts = self.plan.occupancy(minutes, self._rng)
        for cam in self.plan.cameras:
            self._seq[cam.id] += 1
            msg = contract.Occupancy(
                venue=self.venue,
                camera=cam.id,
                seq=self._seq[cam.id],
                ts=now.astimezone(UTC),
                sections=[
                    contract.SectionCount(id=s.id, seats=s.seats, occupied=counts[s.id], people=counts[s.id])
                    for s in cam.sections
                ],
                model="simulated",
                processing=contract.Processing(fps=1.0 / self.interval_s, latency_ms=0.0, frames=self._seq[cam.id]),
            )
            self._clients[cam.id].publish(contract.occupancy_topic(self.venue, cam.id), msg.to_json(), qos=1)
            self.published += 1

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.publish_once()
            except Exception:  # keep simulating; the demo shows the log
                log.exception("simulator: publish failed")
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        for camera, client in self._clients.items():
            offline = contract.Status(
                venue=self.venue, camera=camera, state=contract.CameraState.OFFLINE, ts=self.clock(),
                reason="simulated camera stopped",
            )  # fmt: skip
            info = client.publish(contract.status_topic(self.venue, camera), offline.to_json(), qos=1, retain=True)
            with contextlib.suppress(Exception):
                info.wait_for_publish(2)
            client.loop_stop()
            client.disconnect()
        self._clients.clear()
