"""`turnout demo`: a whole venue on one machine, time-compressed.

Brings up an MQTT broker (Mosquitto if installed, else the embedded amqtt broker), the server on a
temporary SQLite database with a simulated event clock, one REAL edge (`turnout edge run`) on a real
video with the real model, a SIMULATED rest of a 19,000-seat arena (`turnout.simulator`) and SAMPLE
registrations (generated, Tulsa-like: inflated by duplicates, disposable addresses and sign-up bursts).
It prints the dashboard URL and an operator login, and stops everything on Ctrl-C or after `duration`.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from turnout.embedded_broker import (
    RunningBroker,
    die_with_parent,
    free_port,
    start_broker,
    stop_process,
    wait_for_port,
)
from turnout.paths import DEFAULT_MODEL, ModelNotFoundError, resolve_model, shared_dir
from turnout.simulator import SIM_PREFIX, ArenaPlan, SimClock, VenueSimulator, arena_plan

log = logging.getLogger("turnout.demo")

VENUE = "demo-arena"
EVENT = "demo-rally"
EDGE_CAMERA = "edge-cam1"
ARENA_SEATS = 19_000
FINAL_ATTENDANCE = 6_200
DOORS_BEFORE_MIN = 240
DEADLINE_BEFORE_MIN = 60
START_AT_MIN = -235.0
"""Event time at which the demo starts, in minutes relative to the start (just after doors open)."""

EDGE_SECTIONS = [  # normalised polygons over the plaza of vtest.avi
    {"id": "floor-a", "seats": 60, "polygon": [[0.0, 0.3], [0.5, 0.3], [0.5, 1.0], [0.0, 1.0]]},
    {"id": "floor-b", "seats": 60, "polygon": [[0.5, 0.3], [1.0, 0.3], [1.0, 1.0], [0.5, 1.0]]},
]


@dataclass
class DemoTimes:
    start: datetime
    doors_open: datetime
    deadline: datetime
    clock_start: datetime


def demo_times(now: datetime | None = None) -> DemoTimes:
    """Event times around `now` (the demo clock starts just after doors open)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    start = now - timedelta(minutes=START_AT_MIN)
    return DemoTimes(
        start=start,
        doors_open=start - timedelta(minutes=DOORS_BEFORE_MIN),
        deadline=start - timedelta(minutes=DEADLINE_BEFORE_MIN),
        clock_start=now,
    )


# ------------------------------------------------------------------------------------ files
def venue_file(path: Path, plan: ArenaPlan, times: DemoTimes, notify: list[str] | None = None) -> Path:
    """The server's venue/event YAML: the real edge's sections plus the simulated ones; ``notify``: the event's
    organizer channels (Apprise URLs)."""
    sections = [
        {
            "id": s["id"],
            "name": f"Floor {s['id'][-1].upper()} (real camera)",
            "seats": s["seats"],
            "cameras": [EDGE_CAMERA],
        }
        for s in EDGE_SECTIONS
    ]
    cameras = [{"id": EDGE_CAMERA, "name": "Real edge camera (vtest.avi)"}]
    for cam in plan.cameras:
        cameras.append({"id": cam.id, "name": f"{cam.id} (SIMULATED)"})
        for sec in cam.sections:
            name = f"Section {sec.id.removeprefix(SIM_PREFIX + 's')} (simulated)"
            sections.append({"id": sec.id, "name": name, "seats": sec.seats, "cameras": [cam.id]})
    data = {
        "venues": [
            {
                "id": VENUE,
                "name": "Demo Arena (19,000 seats, mostly simulated)",
                "sections": sections,
                "cameras": cameras,
            }
        ],
        "events": [
            {
                "id": EVENT,
                "venue": VENUE,
                "name": "Demo rally (sample data)",
                "doors_open": times.doors_open.isoformat(),
                "start": times.start.isoformat(),
                "capacity": ARENA_SEATS,
                "overflow": {
                    "name": "Outdoor overflow stage",
                    "capacity": 40_000,
                    "deadline": times.deadline.isoformat(),
                    "threshold": 0.95,
                },
                **({"notify": list(notify)} if notify else {}),
            }
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edge_config(path: Path, video: Path, model: Path, broker: RunningBroker, state_dir: Path) -> Path:
    """Config of the one real edge (normalised sections over the whole video frame)."""
    data: dict[str, Any] = {
        "venue": VENUE,
        "device": "demo-edge",
        "state_dir": str(state_dir),
        "status_interval_s": 30,
        "mqtt": {"url": f"mqtt://{broker.host}:{broker.port}", "interval_s": 2.0},
        "model": {"path": str(model), "threads": 1},
        "cameras": [
            {
                "id": EDGE_CAMERA,
                "source": str(video),
                "loop": True,
                "realtime": True,
                "analysis_fps": 2.0,
                "coordinates": "normalized",
                "anchor": "bottom_center",
                "detect": {"mode": "full"},
                "sections": EDGE_SECTIONS,
            }
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sample_registrations(path: Path, count: int, times: DemoTimes, seed: int = 20200620) -> Path:
    """SAMPLE registrations, Tulsa-like: about 40 % pranks (repeats, throw-away domains, bursts)."""
    rng = random.Random(seed)
    opened = times.start - timedelta(days=10)
    burst_minutes = [opened + timedelta(days=rng.uniform(1, 9)) for _ in range(8)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ref", "email", "ticket_type", "registered_at"])
        for i in range(count):
            r = rng.random()
            if r < 0.15:  # the same people again
                email = f"fan{rng.randrange(max(1, i // 4 + 1))}@example.org"
                when = opened + timedelta(seconds=rng.uniform(0, 10 * 86400))
            elif r < 0.27:  # throw-away addresses
                email = f"x{i}@mailinator.com"
                when = opened + timedelta(seconds=rng.uniform(0, 10 * 86400))
            elif r < 0.40:  # sign-up bursts
                email = f"burst{i}@example.net"
                when = rng.choice(burst_minutes) + timedelta(seconds=rng.uniform(0, 59))
            else:
                email = f"fan{i}@example.org"
                when = opened + timedelta(seconds=rng.uniform(0, 10 * 86400))
            ticket = "vip" if rng.random() < 0.02 else "general"
            w.writerow([f"S{i:07d}", email, ticket, when.isoformat()])
    return path


# ------------------------------------------------------------------------------------ parts
def find_video(video: str | None) -> Path:
    if video:
        p = Path(video).expanduser()
        if not p.is_file() and "://" not in video:
            raise SystemExit(f"demo: video {p} not found")
        return p
    shared = shared_dir()
    candidate = shared / "data" / "videos" / "vtest.avi" if shared else None
    if candidate is None or not candidate.is_file():
        raise SystemExit(
            "demo: no sample video: set TURNOUT_SHARED to the shared/ folder (../shared) or pass --video FILE"
        )
    return candidate


def find_model() -> Path | None:
    """The default model; fetched with `turnout models fetch` when missing (needs internet)."""
    try:
        return resolve_model(None)
    except ModelNotFoundError as exc:
        print(f"demo: {exc}\ndemo: trying `turnout models fetch {DEFAULT_MODEL}` (needs internet) ...", flush=True)
    rc = subprocess.call([sys.executable, "-m", "turnout.cli", "models", "fetch", DEFAULT_MODEL])
    if rc != 0:
        print("demo: could not fetch the model; continuing WITHOUT the real edge (simulation only)", flush=True)
        return None
    try:
        return resolve_model(None)
    except ModelNotFoundError:
        return None


class ServerThread:
    """uvicorn running the Turnout app in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self, timeout: float = 60.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def prepare_database(url: str, venues: Path, registrations: Path | None, password: str) -> None:
    """Migrate, load the venue/event, import the sample registrations and create the operator."""
    from server.auth import Role, create_user
    from server.db.session import Database
    from server.migrations import upgrade
    from server.registrations import import_file
    from server.venues import load_file

    db = Database(url)
    try:
        upgrade(db)
        with db.session() as s:
            load_file(s, venues)
        if registrations is not None:
            with db.session() as s:
                report = import_file(s, EVENT, registrations)
                if not report.ok:
                    raise RuntimeError(f"sample registrations refused: {report.errors[:3]}")
        with db.session() as s:
            create_user(s, "operator", Role.operator, password)
    finally:
        db.dispose()


def _edge_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ------------------------------------------------------------------------------------ main
def run_demo(
    video: str | None = None,
    speed: float = 60.0,
    port: int = 8000,
    duration: float | None = None,
    registrations: int | None = None,
    notify: list[str] | None = None,
    report_dir: Path | None = None,
) -> int:
    """Run the demo until Ctrl-C or `duration` seconds; returns the exit code. ``notify``: Apprise URLs that get
    the demo event's alerts; ``report_dir``: where the event's report goes when the demo stops (its database
    is temporary)."""
    if speed <= 0:
        print("demo: --speed must be > 0", file=sys.stderr)
        return 2
    registrations = registrations or int(os.environ.get("TURNOUT_DEMO_REGISTRATIONS", "100000"))
    password = os.environ.get("TURNOUT_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    stop = threading.Event()
    # Ctrl-C and SIGTERM end the demo through `stop` (set explicitly: a shell that starts the demo in the
    # background hands it SIGINT ignored, and Python would then never raise KeyboardInterrupt)
    previous = (
        {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else None
    )
    cleanups: list[Any] = []
    stop_first: list[Any] = []
    tmp = tempfile.TemporaryDirectory(prefix="turnout-demo-")
    work = Path(tmp.name)
    clock: SimClock | None = None
    db_url: str | None = None
    try:
        video_path = find_video(video)
        model = find_model()
        broker = start_broker(prefer_embedded=os.environ.get("TURNOUT_DEMO_BROKER") == "embedded")
        cleanups.append(broker.stop)
        print(f"demo: MQTT broker ({broker.kind}) on {broker.host}:{broker.port}", flush=True)

        times = demo_times()
        plan = arena_plan(ARENA_SEATS - sum(s["seats"] for s in EDGE_SECTIONS), FINAL_ATTENDANCE)
        venues = venue_file(work / "venue.yaml", plan, times, notify)
        regs = sample_registrations(work / "registrations.csv", registrations, times) if registrations > 0 else None
        db_url = f"sqlite:///{work / 'turnout.db'}"
        t0 = time.monotonic()
        prepare_database(db_url, venues, regs, password)
        print(
            f"demo: database ready with {registrations:,} SAMPLE registrations ({time.monotonic() - t0:.1f} s)",
            flush=True,
        )

        from server.app import create_app
        from server.settings import load_settings

        clock = SimClock(times.clock_start, speed)
        settings = load_settings(
            None,
            database_url=db_url,
            mqtt_url=f"mqtt://{broker.host}:{broker.port}",
            mqtt_protocol="5" if broker.kind == "mosquitto" else "3.1.1",
            stale_after_s=30.0 * speed,  # event time: 30 wall seconds
            rate_window_s=max(600.0, 10.0 * speed),
            tick_s=0.5,
            public_read=False,
        )
        if port == 0:
            port = free_port()
        server = ServerThread(create_app(settings, clock=clock), port).start()
        stop_first.append(server.stop)  # before the cameras go: no "camera offline" alerts for a planned stop

        sim = VenueSimulator(plan, venue=VENUE, start_time=times.start, clock=clock, host=broker.host, port=broker.port)
        sim.start()
        cleanups.append(sim.stop)

        if model is not None:
            cfg = edge_config(work / "edge.yaml", video_path, model, broker, work / "edge-state")
            log_file = (work / "edge.log").open("wb")
            edge = subprocess.Popen(
                [sys.executable, "-m", "turnout.cli", "edge", "run", "--config", str(cfg)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_edge_env(),
                preexec_fn=die_with_parent(),  # a demo killed with -9 takes its edge with it
            )
            cleanups.append(lambda: _stop_process(edge, log_file))
            print(f"demo: real edge on {video_path.name} with {model.name} (camera {EDGE_CAMERA})", flush=True)

        url = f"http://127.0.0.1:{port}/"
        print(
            "\n"
            f"  Turnout demo is running: {url}\n"
            f"  Sign in as   operator / {password}\n"
            f"  Event        {EVENT}: doors {times.doors_open:%H:%M}, start {times.start:%H:%M} UTC (event time),\n"
            f"               overflow decision deadline {times.deadline:%H:%M}; time runs {speed:g}x\n"
            f"  Simulated    {len(plan.cameras)} cameras ({SIM_PREFIX}*), {plan.seats:,} seats; "
            f"registrations are SAMPLE data\n"
            "  Stop with Ctrl-C.\n",
            flush=True,
        )
        print(f"demo: ready {url}", flush=True)
        wait_for_port("127.0.0.1", port, 5)
        _monitor(server, clock, times, stop, duration)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("demo: stopping ...", flush=True)
        for fn in [*stop_first, *reversed(cleanups)]:
            try:
                fn()
            except Exception as exc:  # keep stopping the rest
                print(f"demo: while stopping: {exc}", file=sys.stderr)
        if report_dir is not None and clock is not None and db_url is not None:
            try:
                write_reports(db_url, clock(), report_dir)
            except Exception as exc:  # the demo still stops cleanly
                print(f"demo: report not written: {exc}", file=sys.stderr)
        tmp.cleanup()
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)
        print("demo: stopped", flush=True)


def write_reports(db_url: str, now: datetime, out_dir: Path) -> None:
    """The demo event's report in every format, from the demo's database as it stands at event time ``now``."""
    from server.db.session import Database
    from server.report import render
    from server.report.gather import gather
    from server.report.pdf import PdfUnavailable

    out_dir.mkdir(parents=True, exist_ok=True)
    db = Database(db_url)
    try:
        with db.session() as s:
            data = gather(s, EVENT, now)
    finally:
        db.dispose()
    for fmt in ("pdf", "html", "csv"):
        try:
            body = render(data, fmt)
        except PdfUnavailable as exc:
            print(f"demo: report: {exc}", file=sys.stderr)
            continue
        path = out_dir / f"report-{EVENT}.{fmt}"
        path.write_bytes(body)
        print(f"demo: report written: {path} ({len(body):,} bytes)", flush=True)


def _monitor(
    server: ServerThread, clock: SimClock, times: DemoTimes, stop: threading.Event, duration: float | None
) -> None:
    """Print a status line every few seconds until stopped."""
    hub = server.server.config.app.state.hub
    t_end = time.monotonic() + duration if duration else None
    last_state = None
    while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
        try:
            snap = hub.snapshot(EVENT)
        except KeyError:
            snap = None
        if snap:
            fc = snap.get("forecast") or {}
            state = snap["decision"]["state"]
            minutes = (clock() - times.start).total_seconds() / 60
            line = (
                f"demo: T{minutes:+.0f} min  attendance {snap['attendance']:,}  "
                f"forecast {fc.get('value', 0):,.0f} [{fc.get('low', 0):,.0f}-{fc.get('high', 0):,.0f}]  "
                f"decision {state}"
            )
            if state != last_state:
                line += "  <- new"
                last_state = state
            print(line, flush=True)
        stop.wait(5.0)


def _stop_process(proc: subprocess.Popen[bytes], log_file: Any) -> None:
    stop_process(proc, signal.SIGINT, timeout=10)  # SIGINT: the edge flushes its queue and says offline
    log_file.close()
