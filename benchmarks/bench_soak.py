"""Load and soak: N cameras x 1 message/s for D minutes against two `turnout server` processes on PostgreSQL.

    .venv/bin/python benchmarks/bench_soak.py [--cameras 2000] [--minutes 10] [--pg URL] [--broker HOST:PORT]

Two real server processes (the `turnout server` command, default settings: 1 s evaluation tick, evaluator
lease, state flushes) share the occupancy subscription (`mqtt_shared_group`, one persistent session each) and
one PostgreSQL schema made for the run (dropped afterwards). Publisher processes send QoS 1 occupancy
messages, each camera once per second, spread evenly over the second (``ts`` set just before publishing).
A private Mosquitto is started unless --broker is given.

Every ``--sample-s`` seconds each server's ``/metrics`` is scraped and its RSS and CPU time read from /proc.
Printed: applied messages per second (whole run and the slowest minute), publish -> applied-to-live-state
latency (p50 / p99 from the merged ``turnout_ingest_lag_seconds`` histograms, interpolated within buckets as
Prometheus' histogram_quantile does, and the share under 0.25 s), RSS at the end of the first minute and at
the end, RSS growth per minute after a 2-minute warm-up (least squares), CPU use of every process, lost
(sent and not applied: sent minus applied across the two; a message is applied by one process at most, the
broker gives it to one member of the group) and duplicates (re-deliveries refused by the seq rule). Exit status 1 when anything was lost.
Also printed: cameras whose saved ``cameras.last_seq`` is behind their last message (not a loss: each process
saves its own view of a camera, the last writer wins).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_server import _publisher, private_broker
from server.db.session import Database
from server.migrations import upgrade
from server.venues import CameraIn, EventIn, OverflowIn, SectionIn, VenueIn, save_event, save_venue

PG_URL = os.environ.get("TURNOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    rss_mb: float
    cpu_s: float
    metrics: dict[str, float]


@dataclass
class Proc:
    name: str
    port: int
    proc: subprocess.Popen
    samples: list[Sample] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def rss_cpu(pid: int) -> tuple[float, float]:
    """(resident MB, user+system CPU seconds) of a process, from /proc."""
    rss = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss / 1024, (int(stat[11]) + int(stat[12])) / TICKS


def scrape(url: str) -> dict[str, float]:
    """Every sample line of /metrics as {name{labels}: value}."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def setup_db(url: str, schema: str, venue: str, n: int) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    db = Database(url, schema)
    upgrade(db)
    cams = [f"c{i:04d}" for i in range(n)]
    now = datetime.now(UTC)
    with db.session() as s:
        save_venue(s, VenueIn(id=venue, name="soak", cameras=[CameraIn(id=c) for c in cams],
                              sections=[SectionIn(id=f"{c}-{x}", seats=100, cameras=[c]) for c in cams for x in "ab"]))  # fmt: skip
        s.flush()
        save_event(s, EventIn(id="soak", venue=venue, name="soak", doors_open=now - timedelta(hours=2),
                              start=now + timedelta(hours=3), capacity=200 * n,
                              overflow=OverflowIn(capacity=1000, deadline=now + timedelta(hours=2), threshold=0.9)))  # fmt: skip
        s.commit()
    db.dispose()


def last_seqs(url: str, schema: str, venue: str) -> list[int | None]:
    eng = sa.create_engine(url)
    with eng.connect() as c:
        rows = c.execute(sa.text(f'SELECT last_seq FROM "{schema}".cameras WHERE venue_id = :v'), {"v": venue})
        out = [r[0] for r in rows]
    eng.dispose()
    return out


def drop_schema(url: str, schema: str) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def start_server(name: str, env: dict[str, str], workdir: Path) -> Proc:
    port = _free_port()
    log = open(workdir / f"server-{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "turnout.cli", "server", "--port", str(port)],
                            env={**env, "TURNOUT_MQTT_CLIENT_ID": f"soak-{name}"}, stdout=log, stderr=log)  # fmt: skip
    p = Proc(name, port, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server {name} exited; see {workdir / f'server-{name}.log'}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{p.url}/healthz", timeout=2).json().get("mqtt_connected"):
                return p
        if time.monotonic() > deadline:
            raise SystemExit(f"server {name} not up in 60 s")
        time.sleep(0.3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over cumulative (upper bound, count) buckets, +Inf last."""
    total = buckets[-1][1]
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 0)
        prev_le, prev_n = le, n
    return prev_le


def lag_buckets(metrics: list[dict[str, float]]) -> list[tuple[float, float]]:
    """The ingest-lag histogram of several processes, merged."""
    merged: dict[float, float] = {}
    for m in metrics:
        for key, value in m.items():
            if key.startswith("turnout_ingest_lag_seconds_bucket"):
                le = key.split('le="')[1].split('"')[0]
                bound = float("inf") if le == "+Inf" else float(le)
                merged[bound] = merged.get(bound, 0) + value
    return sorted(merged.items())


def slope_mb_per_min(samples: list[Sample], t0: float, warmup_s: float) -> float:
    pts = [(s.t - t0, s.rss_mb) for s in samples if s.t - t0 >= warmup_s]
    if len(pts) < 3:
        pts = [(s.t - t0, s.rss_mb) for s in samples]
    x, y = np.array([p[0] for p in pts]) / 60, np.array([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0]) if len(pts) >= 2 else float("nan")


def applied(m: dict[str, float]) -> float:
    return m.get('turnout_messages_applied_total{kind="occupancy"}', 0.0)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="turnout-soak-"))
    schema, venue = f"soak_{uuid.uuid4().hex[:10]}", f"soak{uuid.uuid4().hex[:6]}"
    setup_db(args.pg, schema, venue, args.cameras)
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_CONFIG"}
    env.update({
        "TURNOUT_DATABASE_URL": args.pg, "TURNOUT_DATABASE_SCHEMA": schema, "TURNOUT_MQTT_URL": f"mqtt://{args.broker}",
        "TURNOUT_MQTT_VENUES": json.dumps([venue]), "TURNOUT_MQTT_SHARED_GROUP": "soak", "TURNOUT_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    servers: list[Proc] = []
    pubs: list[mp.Process] = []
    try:
        servers = [start_server(n, env, workdir) for n in ("a", "b")]
        per_cam = int(args.minutes * 60 * args.rate)
        sent = per_cam * args.cameras
        host, port = args.broker.split(":")
        cams = [f"c{i:04d}" for i in range(args.cameras)]
        go = time.time() + 2
        pubs = [mp.Process(target=_publisher, args=(host, int(port), venue, cams[i :: args.publishers], per_cam,
                                                   args.rate, go)) for i in range(args.publishers)]  # fmt: skip
        for p in pubs:
            p.start()
        loads: list[float] = []
        t0 = go
        print(f"# {args.cameras} cameras x {args.rate:g} msg/s for {args.minutes:g} min = {sent:,} messages; "
              f"servers pid {servers[0].proc.pid}, {servers[1].proc.pid}; logs in {workdir}", flush=True)  # fmt: skip
        pub_cpu: dict[int, float] = {}
        last_progress = (0.0, time.monotonic())
        while True:
            now = time.time()
            for s in servers:
                rss, cpu = rss_cpu(s.proc.pid)
                s.samples.append(Sample(now, rss, cpu, scrape(s.url)))
            for p in pubs:
                if p.is_alive() and p.pid:
                    with contextlib.suppress(OSError, StopIteration):
                        pub_cpu[p.pid] = rss_cpu(p.pid)[1]
            loads.append(os.getloadavg()[0])
            done = sum(applied(s.samples[-1].metrics) for s in servers)
            if done != last_progress[0]:
                last_progress = (done, time.monotonic())
            if int(now - t0) % 60 < args.sample_s:
                print(f"  +{now - t0:5.0f} s applied {done:,.0f} rss " +
                      " ".join(f"{s.name}={s.samples[-1].rss_mb:.0f}MB" for s in servers), flush=True)  # fmt: skip
            if not any(p.is_alive() for p in pubs) and (done >= sent or time.monotonic() - last_progress[1] > 30):
                break
            time.sleep(max(0.0, args.sample_s - (time.time() - now)))
        pub_end = time.time()
        time.sleep(3)  # the last state flush
        final = [scrape(s.url) for s in servers]
        seqs = last_seqs(args.pg, schema, venue)
    finally:
        for p in pubs:
            p.join(5)
            if p.is_alive():
                p.kill()
        for s in servers:
            s.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(20)
        drop_schema(args.pg, schema)
    return report(args, servers, final, sent, per_cam, seqs, loads, pub_cpu, t0, pub_end)


def report(args: argparse.Namespace, servers: list[Proc], final: list[dict[str, float]], sent: int, per_cam: int,
           seqs: list[int | None], loads: list[float], pub_cpu: dict[int, float], t0: float, end: float) -> int:  # fmt: skip
    total_applied = sum(applied(m) for m in final)
    dups = sum(m.get('turnout_messages_rejected_total{reason="duplicate_or_old"}', 0.0) for m in final)
    other_rejected = sum(v for m in final for k, v in m.items()
                         if k.startswith("turnout_messages_rejected_total") and "duplicate_or_old" not in k)  # fmt: skip
    lost = sent - int(total_applied)
    behind = sum(1 for s in seqs if s != per_cam)
    buckets = lag_buckets(final)
    under = next((n for le, n in buckets if le == 0.25), 0.0) / buckets[-1][1] if buckets and buckets[-1][1] else 0.0
    # applied per minute across both, from the samples (the slowest full minute)
    times = [s.t for s in servers[0].samples]
    both = [applied(a.metrics) + applied(b.metrics) for a, b in zip(servers[0].samples, servers[1].samples, strict=False)]
    minute_rates = []
    for i, t in enumerate(times):
        j = next((k for k in range(i, len(times)) if times[k] - t >= 60), None)
        if j is not None and times[i] >= t0 + 10 and both[j] - both[i] > 0 and times[j] <= end - 10:
            minute_rates.append((both[j] - both[i]) / (times[j] - t))
    span = end - t0
    print()
    print(f"Soak: {args.cameras:,} cameras x {args.rate:g} msg/s, {args.minutes:g} min, 2 `turnout server` processes on "
          f"PostgreSQL, shared subscription; load average {np.mean(loads):.1f} (max {max(loads):.1f}) on "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print()
    print("| sent | applied | lost | duplicates | other rejected | applied/s (run) | applied/s (slowest minute) | "
          "p50 publish->live | p99 publish->live | under 0.25 s | cameras.last_seq behind last sent |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {sent:,} | {total_applied:,.0f} | {lost:,} | {dups:,.0f} | {other_rejected:,.0f} | "
          f"{total_applied / span:,.0f} | {min(minute_rates) if minute_rates else float('nan'):,.0f} | "
          f"{quantile(0.5, buckets) * 1000:,.0f} ms | {quantile(0.99, buckets) * 1000:,.0f} ms | {under:.1%} | {behind} |")  # fmt: skip
    print()
    print("| process | applied | RSS after 1 min MB | RSS at end MB | RSS growth MB/min (after 2 min) | CPU % | "
          "tick p50 ms (count) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for s, m in zip(servers, final, strict=True):
        first = next((x for x in s.samples if x.t - t0 >= 60), s.samples[0])
        cpu = (s.samples[-1].cpu_s - s.samples[0].cpu_s) / (s.samples[-1].t - s.samples[0].t) * 100
        ticks = m.get("turnout_tick_duration_seconds_count", 0)
        tick_b = sorted((float("inf") if (le := k.split('le="')[1].split('"')[0]) == "+Inf" else float(le), v)
                        for k, v in m.items() if k.startswith("turnout_tick_duration_seconds_bucket"))  # fmt: skip
        tick_p50 = quantile(0.5, tick_b) * 1000 if tick_b and tick_b[-1][1] else float("nan")
        print(f"| server {s.name} | {applied(m):,.0f} | {first.rss_mb:.0f} | {s.samples[-1].rss_mb:.0f} | "
              f"{slope_mb_per_min(s.samples, t0, 120):+.2f} | {cpu:.0f} | {tick_p50:.0f} ({ticks:.0f}) |")  # fmt: skip
    print(f"| publishers ({len(pub_cpu)}) | | | | | {sum(pub_cpu.values()) / span * 100:.0f} | |")
    if lost:
        print(f"\nLOST {lost} messages (sent minus applied)")
    if behind:
        print(f"{behind} cameras' saved last_seq is behind their last message: each process saves its own view of a "
              "camera (it sees only its share of the camera's messages) and the last writer wins")
    return 1 if lost else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1.0, help="Messages per second per camera.")
    ap.add_argument("--publishers", type=int, default=2, help="Publisher processes.")
    ap.add_argument("--sample-s", type=float, default=10.0, help="Seconds between scrapes.")
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL URL (a schema is made for the run and dropped).")
    ap.add_argument("--broker", default=None, help="Use this broker (HOST:PORT) instead of a private Mosquitto.")
    args = ap.parse_args()
    if args.broker:
        code = run(args)
    else:
        with private_broker() as broker:
            args.broker = broker
            code = run(args)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
