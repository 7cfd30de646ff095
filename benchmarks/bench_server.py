"""Server ingest benchmark through a real MQTT broker.

1. Throughput: N simulated cameras publish as fast as they can (separate processes); messages/s that
   one server process validates and applies to its live state.
2. Latency: 1,000 cameras publishing once a second each; time from publish (the message's ``ts``) to the
   live state being updated, p50 / p99.

    python benchmarks/bench_server.py [--broker HOST:PORT] [--cameras 10 100 1000] [--seconds 20]

Starts a private Mosquitto (large queues, so the broker never drops) unless --broker HOST:PORT is given;
the server side runs in this process on a throwaway SQLite.

Each run prints sent, applied, lost (sent and never applied, matched by (camera, seq)) and duplicates
(re-deliveries refused by the sequence rule); the exit status is 1 when any message was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from server.db.session import Database
from server.ingest import MqttBridge
from server.live import LiveHub
from server.migrations import upgrade
from server.settings import load_settings
from server.venues import CameraIn, EventIn, OverflowIn, SectionIn, VenueIn, save_event, save_venue
from turnout.contract import Occupancy


def _payload(venue: str, camera: str, seq: int, ts: str) -> bytes:
    return (
        f'{{"v":1,"venue":"{venue}","camera":"{camera}","seq":{seq},"ts":"{ts}",'
        f'"sections":[{{"id":"{camera}-a","seats":100,"occupied":{seq % 100},"people":{seq % 100}}},'
        f'{{"id":"{camera}-b","seats":100,"occupied":{(seq * 7) % 100},"people":{(seq * 7) % 100}}}],'
        f'"model":"yolo11n","processing":{{"fps":5.0,"latency_ms":40.0,"frames":{seq}}}}}'
    ).encode()


def _publisher(
    host: str, port: int, venue: str, cameras: list[str], count: int, rate_hz: float | None, go: float
) -> None:
    """Publish ``count`` messages per camera; flat out (rate None) or each camera at ``rate_hz``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    topics = [f"turnout/v1/{venue}/{c}/occupancy" for c in cameras]
    while time.time() < go:
        time.sleep(0.001)
    info = None
    for seq in range(1, count + 1):
        if rate_hz:
            # spread the cameras evenly over each period
            period_start = go + (seq - 1) / rate_hz
        for i, (cam, topic) in enumerate(zip(cameras, topics, strict=True)):
            if rate_hz:
                due = period_start + i / (rate_hz * len(cameras))
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            ts = datetime.now(UTC).isoformat()
            info = client.publish(topic, _payload(venue, cam, seq, ts), qos=1)
    if info is not None:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _server(broker: str, venue: str, n_cameras: int) -> tuple[LiveHub, MqttBridge]:
    tmp = tempfile.mkdtemp()
    settings = load_settings(
        None, database_url=f"sqlite:///{tmp}/bench.db", mqtt_url=f"mqtt://{broker}", mqtt_venues=[venue]
    )
    db = Database(settings.database_url)
    upgrade(db)
    cams = [f"c{i:04d}" for i in range(n_cameras)]
    with db.session() as s:
        save_venue(
            s,
            VenueIn(
                id=venue,
                name="bench",
                cameras=[CameraIn(id=c) for c in cams],
                sections=[SectionIn(id=f"{c}-{x}", seats=100, cameras=[c]) for c in cams for x in "ab"],
            ),
        )
        s.flush()
        now = datetime.now(UTC)
        save_event(
            s,
            EventIn(
                id=f"{venue}-ev",
                venue=venue,
                name="bench",
                doors_open=now - timedelta(hours=2),
                start=now + timedelta(hours=1),
                capacity=200 * n_cameras,
                overflow=OverflowIn(capacity=1000, deadline=now + timedelta(minutes=30), threshold=0.9),
            ),
        )
        s.commit()
    hub = LiveHub(settings, db)
    hub.reload()
    bridge = MqttBridge(settings, hub)
    bridge.start()
    if not bridge.wait_connected(10):
        raise SystemExit(f"cannot connect to the broker at {broker}")
    return hub, bridge


def _spawn(broker: str, venue: str, cams: list[str], count: int, rate: float | None, procs: int) -> list:
    host, port = broker.split(":")
    go = time.time() + 1.5
    chunks = [cams[i::procs] for i in range(procs)]
    ps = [mp.Process(target=_publisher, args=(host, int(port), venue, c, count, rate, go)) for c in chunks if c]
    for p in ps:
        p.start()
    return ps


def _cpu() -> float:
    """CPU seconds used by this (server) process; the publishers are other processes."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def throughput(broker: str, n_cameras: int, total: int, procs: int) -> dict:
    venue = f"bench{uuid.uuid4().hex[:8]}"
    hub, bridge = _server(broker, venue, n_cameras)
    cams = [f"c{i:04d}" for i in range(n_cameras)]
    per_cam = max(1, total // n_cameras)
    expected = per_cam * n_cameras
    times: list[float] = []
    applied: list[tuple[str, int]] = []
    done = threading.Event()

    def on_msg(msg: Occupancy) -> None:
        times.append(time.perf_counter())
        applied.append((msg.camera, msg.seq))
        if len(times) >= expected:
            done.set()

    hub.observe(on_msg)
    cpu0 = _cpu()
    ps = _spawn(broker, venue, cams, per_cam, None, procs)
    _wait_quiet(done, times, first_s=60, quiet_s=10)
    cpu = _cpu() - cpu0
    for p in ps:
        p.join(30)
    bridge.stop()
    got = len(times)
    span = times[-1] - times[0] if got > 1 else float("nan")
    return {
        "cameras": n_cameras,
        "messages": got,
        "expected": expected,
        "seconds": span,
        "msg_per_s": (got - 1) / span if got > 1 else 0.0,
        "rejected": hub.counters["malformed"],
        "msg_per_cpu_s": got / cpu if cpu > 0 else float("nan"),
        **_delivery(cams, per_cam, applied, hub),
    }


def latency(broker: str, n_cameras: int, seconds: int, procs: int) -> dict:
    venue = f"bench{uuid.uuid4().hex[:8]}"
    hub, bridge = _server(broker, venue, n_cameras)
    cams = [f"c{i:04d}" for i in range(n_cameras)]
    lat: list[float] = []
    applied: list[tuple[str, int]] = []

    def on_msg(msg: Occupancy) -> None:
        lat.append((datetime.now(UTC) - msg.ts).total_seconds() * 1000)
        applied.append((msg.camera, msg.seq))

    hub.observe(on_msg)
    stop = threading.Event()

    def server_work() -> None:  # what the real server also does: evaluate every second, dashboards at 5 Hz
        last_tick = 0.0
        while not stop.is_set():
            if time.monotonic() - last_tick >= 1.0:
                hub.tick()
                last_tick = time.monotonic()
            hub.snapshot(f"{venue}-ev")
            time.sleep(0.2)

    worker = threading.Thread(target=server_work, daemon=True)
    worker.start()
    ps = _spawn(broker, venue, cams, seconds, 1.0, procs)
    for p in ps:
        p.join(seconds + 120)
    _wait_quiet(threading.Event(), applied, first_s=0, quiet_s=2, until=n_cameras * seconds)
    stop.set()
    worker.join(10)
    bridge.stop()
    arr = np.array(lat[n_cameras:])  # skip the first second (connections warming up)
    return {
        "cameras": n_cameras,
        "messages": len(lat),
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
        "mean_ms": statistics.fmean(arr),
        **_delivery(cams, seconds, applied, hub),
    }


def _wait_quiet(done: threading.Event, seen: list, first_s: float, quiet_s: float, until: int | None = None) -> None:
    """Wait for ``done`` (or ``until`` items in ``seen``); give up once nothing new arrived for ``quiet_s``
    (after ``first_s`` for the first one), so that lost messages end the wait instead of hanging it."""
    last_n, last_t = -1, time.monotonic() + first_s
    while not done.is_set() and (until is None or len(seen) < until):
        if len(seen) != last_n:
            last_n, last_t = len(seen), time.monotonic()
        elif time.monotonic() - last_t > quiet_s:
            return
        done.wait(0.1)


def _delivery(cams: list[str], per_cam: int, applied: list[tuple[str, int]], hub: LiveHub) -> dict:
    """Sent vs applied, matched by (camera, seq): lost = sent and never applied; duplicates = copies the
    broker delivered again (refused by the sequence rule) plus any (camera, seq) applied twice (a bug)."""
    sent = {(c, seq) for c in cams for seq in range(1, per_cam + 1)}
    got = set(applied)
    return {
        "sent": len(sent),
        "applied": len(got & sent),
        "lost": len(sent - got),
        "duplicates": hub.counters["duplicate_or_old"] + len(applied) - len(got),
    }


@contextlib.contextmanager
def private_broker():  # type: ignore[no-untyped-def]
    """A throwaway Mosquitto on a free port; yields "127.0.0.1:PORT"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = tempfile.mkdtemp()
    conf = f"{tmp}/mosquitto.conf"
    with open(conf, "w") as fh:
        fh.write(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
        )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default=None, help="Use this broker instead of a private Mosquitto.")
    ap.add_argument("--cameras", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--messages", type=int, default=60_000, help="Messages per throughput run.")
    ap.add_argument("--publishers", type=int, default=1, help="Publisher processes.")
    ap.add_argument("--latency-cameras", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=20, help="Duration of the latency run.")
    args = ap.parse_args()
    if args.broker:
        lost = run(args)
    else:
        with private_broker() as broker:
            args.broker = broker
            lost = run(args)
    if lost:
        raise SystemExit(1)  # any lost message fails the benchmark


def run(args: argparse.Namespace) -> int:
    """Print both tables; the number of messages lost over all runs (sent, never applied)."""
    lost = 0

    print(f"# ingest throughput (one server process, broker {args.broker}, {args.publishers} publisher processes)")
    print(
        f"{'cameras':>8} {'sent':>8} {'applied':>8} {'lost':>6} {'dups':>6} {'seconds':>8} {'msg/s':>9} "
        f"{'msg/CPU-s':>10} {'rejected':>9}"
    )
    for n in args.cameras:
        r = throughput(args.broker, n, args.messages, args.publishers)
        lost += r["lost"]
        print(
            f"{r['cameras']:>8} {r['sent']:>8} {r['applied']:>8} {r['lost']:>6} {r['duplicates']:>6} "
            f"{r['seconds']:>8.2f} {r['msg_per_s']:>9.0f} {r['msg_per_cpu_s']:>10.0f} {r['rejected']:>9}"
        )
    print()
    print(
        f"# latency publish -> live state, {args.latency_cameras} cameras at 1 msg/s each, {args.seconds} s "
        "(with evaluation every 1 s and a 5 Hz dashboard snapshot running)"
    )
    r = latency(args.broker, args.latency_cameras, args.seconds, args.publishers)
    lost += r["lost"]
    print(
        f"{'cameras':>8} {'sent':>8} {'applied':>8} {'lost':>6} {'dups':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(
        f"{r['cameras']:>8} {r['sent']:>8} {r['applied']:>8} {r['lost']:>6} {r['duplicates']:>6} "
        f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}"
    )
    if lost:
        print(f"\nLOST {lost} messages (sent, acknowledged by the broker, never applied)")
    return lost


if __name__ == "__main__":
    main()
