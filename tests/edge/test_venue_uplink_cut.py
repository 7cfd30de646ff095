"""The venue's uplink cut the way it happens: deploy/venue/mosquitto.conf in its own network namespace.

The venue network (namespace ``tvu*``) holds the venue Mosquitto (the shipped config), two real edge
publishers (TLS, per-camera users, on-disk spools), a venue `turnout server` on SQLite (the dashboard that stays
up, deploy/venue/README.md) and an organizer app watching alerts and the uplink state on the venue broker. The
central Mosquitto and the central `turnout server` are in the root namespace; the two networks are joined by
one veth pair, the uplink, which is set down (``ip link set ... down``) for UPLINK_CUT_S seconds. Meanwhile
one venue camera dies (SIGKILL).

Asserted: the uplink was really lost (the bridge state went 0 at the venue, nothing reached the central
server); the edges never noticed; the venue dashboard kept counting and its alert for the dead camera reached
the venue's organizer app during the cut; afterwards every seq reached the central server and was applied
exactly once, and the central server's own alert raised during the cut reached the venue once the link was back.

Needs root and ``ip`` (skipped otherwise, with the reason). The suite cuts 60 s (the issue's figure) with the
shipped bridge keepalive (10 s); ``TURNOUT_UPLINK_CUT_S=15`` gives a quick run with a 5 s keepalive. The file is also the
agent run inside the namespace: ``python -m tests.edge.test_venue_uplink_cut edge|watch ...``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.edge.mqtt_tools import spool_state
from tests.edge.test_delivery_netns import Link, netns_unavailable
from tests.edge.test_mosquitto_acl import _make_certs, _openssl
from tests.edge.test_venue_bridge import BRIDGE, SERVER, VENUE, Mosquitto, venue_conf
from turnout.embedded_broker import stop_process

pytestmark = [pytest.mark.slow, pytest.mark.isolated]

ROOT = Path(__file__).resolve().parents[2]
CUT_S = float(os.environ.get("TURNOUT_UPLINK_CUT_S", "60"))  # the figure (runs beside the rest: isolated)
# the shipped keepalive_interval (10 s) notices a dead uplink in 10-30 s; a short cut needs a shorter one
BRIDGE_KEEPALIVE = {} if CUT_S >= 45 else {"keepalive_interval": "5"}
STALE_S = 5
CAMS = ("cam0", "cam1")  # cam1 dies during the cut
ORGANIZER = ("organizer-tulsa", "org-pw")
SECTIONS = {"cam0": ("s00", "s02"), "cam1": ("s01", "s03")}  # tests.server.helpers.venue_spec(VENUE, 2, 4, ...)


# --------------------------------------------------------------------------------- the two networks
@dataclass
class Venue:
    link: Link
    workdir: Path
    broker_port: int
    ca: Path

    def popen(self, name: str, *cmd: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.link.ns, *cmd], stdout=out, stderr=out, cwd=ROOT,
                                    env=env or {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})  # fmt: skip

    def curl(self, url: str) -> dict | None:
        """GET from inside the venue network (None when it does not answer)."""
        res = subprocess.run(["ip", "netns", "exec", self.link.ns, "curl", "-sf", "--max-time", "3", url],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        return json.loads(res.stdout) if res.returncode == 0 and res.stdout else None


def _central_cert(d: Path, ip: str) -> None:
    """A certificate for the central broker's uplink address, from the CA `_make_certs` made."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={ip}", "-keyout", "central.key",
             "-out", "central.csr", cwd=d)  # fmt: skip
    (d / "central.ext").write_text(f"subjectAltName=IP:{ip}\n")
    _openssl("x509", "-req", "-in", "central.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "central.ext", "-out", "central.crt", cwd=d)  # fmt: skip


@pytest.fixture
def networks(tmp_path: Path) -> Iterator[tuple[Venue, Mosquitto]]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    for tool in ("mosquitto_passwd", "openssl", "curl"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    tag, net = secrets.token_hex(2), f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(256)}"
    link = Link(f"tvu{tag}", f"vvu{tag}h", f"vvu{tag}n", f"{net}.1", f"{net}.2")
    _make_certs(tmp_path)
    _central_cert(tmp_path, link.host_ip)
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, pw in (SERVER, BRIDGE, ORGANIZER, *((f"{VENUE}/{c}", f"{c}-pw") for c in CAMS)):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    for c in CAMS:
        (tmp_path / f"{c}.pw").write_text(f"{c}-pw")
    # deploy/mosquitto/acl plus an organizer as its README adds them, who also watches the uplink state
    acl = tmp_path / "acl"
    acl.write_text((ROOT / "deploy" / "mosquitto" / "acl").read_text()
                   + f"\nuser {ORGANIZER[0]}\ntopic read turnout/v1/{VENUE}/alerts/+\ntopic read $SYS/broker/connection/#\n")  # fmt: skip
    central_tls, central_plain, venue_port = free_port(), free_port(), free_port()
    (tmp_path / "central").mkdir()
    (tmp_path / "venue").mkdir()
    central = Mosquitto(
        f"per_listener_settings false\nallow_anonymous true\npassword_file {passwd}\npersistence true\n"
        f"persistence_location {tmp_path}/central/\nmax_queued_messages 1000000\n"
        f"listener {central_tls} {link.host_ip}\ncafile {tmp_path}/ca.crt\ncertfile {tmp_path}/central.crt\n"
        f"keyfile {tmp_path}/central.key\nlistener {central_plain} 127.0.0.1\n",
        central_plain, tmp_path, "central",
    )
    conf = venue_conf(tmp_path, passwd, f"{link.host_ip}:{central_tls}", f"{venue_port} 127.0.0.1", acl=acl,
                      **BRIDGE_KEEPALIVE)  # fmt: skip
    (tmp_path / "venue.conf").write_text(conf + ("\nuser root\n" if os.geteuid() == 0 else ""))
    venue = Venue(link, tmp_path, venue_port, tmp_path / "ca.crt")
    broker = None
    try:
        link.create()
        central.start()
        broker = venue.popen("venue-mosquitto", shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(tmp_path / "venue.conf"))  # fmt: skip
        yield venue, central
    finally:
        if broker is not None:
            stop_process(broker)
        central.stop()
        link.destroy()


# --------------------------------------------------------------------------------- processes
class Agent:
    """`python -m tests.edge.test_venue_uplink_cut ROLE ...` in the venue network; it reports through a file."""

    def __init__(self, venue: Venue, name: str, role: str, *args: str) -> None:
        self.events = venue.workdir / f"{name}.events"
        self.stop_file = venue.workdir / f"{name}.stop"
        self.log = venue.workdir / f"{name}.log"
        self.proc = venue.popen(name, sys.executable, "-m", "tests.edge.test_venue_uplink_cut", role,
                                str(self.events), str(self.stop_file), *args)  # fmt: skip

    def lines(self) -> list[dict]:
        return [json.loads(x) for x in self.events.read_text().splitlines()] if self.events.exists() else []

    def stop(self) -> None:
        self.stop_file.touch()
        try:
            self.proc.wait(30)
        finally:
            stop_process(self.proc)


def server_env(db: Path, mqtt_url: str, client_id: str, record: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_CONFIG"}
    env.update({
        "TURNOUT_DATABASE_URL": f"sqlite:///{db}", "TURNOUT_MQTT_URL": mqtt_url, "TURNOUT_MQTT_CLIENT_ID": client_id,
        "TURNOUT_MQTT_VENUES": json.dumps([VENUE]), "TURNOUT_STALE_AFTER_S": str(STALE_S), "TURNOUT_TICK_S": "0.5",
        "TURNOUT_FLUSH_INTERVAL_S": "0.5", "PYTHONPATH": str(ROOT), **extra,
    })  # fmt: skip
    if record is not None:
        env["TURNOUT_RECORD_FILE"] = str(record)
    return env


def prepare_db(path: Path) -> None:
    from server.db.session import Database
    from server.migrations import upgrade
    from tests.server.helpers import event_spec, setup_venue, venue_spec

    db = Database(f"sqlite:///{path}", None)
    upgrade(db)
    start = datetime.now(UTC) + timedelta(minutes=60)
    setup_venue(db, venue_spec(VENUE, len(CAMS), 4, 2000), event_spec(VENUE, start, 2000, deadline_min=20))
    db.dispose()


def wait(cond: Callable[[], object], timeout: float, what: str, *logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{p.read_text()[-2500:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
        time.sleep(0.1)


def central_occupancy(record: Path) -> list[tuple[float, str, int]]:
    """(received at, camera, seq) of every occupancy message the central server received."""
    out = []
    for line in record.read_text().splitlines() if record.exists() else []:
        msg = json.loads(line)
        if msg["topic"].endswith("/occupancy"):
            at = datetime.fromisoformat(msg["ts"]).timestamp()
            out.append((at, msg["payload"]["camera"], msg["payload"]["seq"]))
    return out


def metric(url: str, name: str, labels: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def alerts(watch: Agent, kind: str, camera: str, state: str) -> list[dict]:
    """The watcher's lines carrying ``kind`` alert for ``camera`` in ``state``."""
    return [e for e in watch.lines() if e["topic"].endswith(f"/alerts/{kind}") and e["payload"]
            and (p := json.loads(e["payload"]))["figures"].get("camera") == camera and p["state"] == state]  # fmt: skip


# --------------------------------------------------------------------------------- the test
def test_uplink_cut_venue_keeps_counting_and_alerting_nothing_lost(networks: tuple[Venue, Mosquitto]) -> None:
    from tests.server.test_restart import ServerProcess

    venue, central = networks
    tmp = venue.workdir
    record = tmp / "central.jsonl"
    for name in ("central", "venue"):
        prepare_db(tmp / f"{name}.db")
    central_srv = ServerProcess(server_env(tmp / "central.db", f"mqtt://127.0.0.1:{central.port}", "server-central",
                                           record), free_port(), tmp / "central-server.log")  # fmt: skip
    venue_http = free_port()
    venue_srv = venue.popen(
        "venue-server", sys.executable, "-m", "turnout.cli", "server", "--port", str(venue_http),
        env=server_env(tmp / "venue.db", f"mqtts://127.0.0.1:{venue.broker_port}", SERVER[0],
                       TURNOUT_MQTT_USERNAME=SERVER[0], TURNOUT_MQTT_PASSWORD=SERVER[1],
                       TURNOUT_MQTT_TLS_CA=str(venue.ca)),
    )  # fmt: skip
    venue_url = f"http://127.0.0.1:{venue_http}"
    url = f"mqtts://127.0.0.1:{venue.broker_port}"
    agents: list[Agent] = []
    try:
        central_srv.start()
        health = lambda: venue.curl(f"{venue_url}/healthz") or {}  # noqa: E731
        wait(lambda: health().get("mqtt_connected"), 40, "the venue server", tmp / "venue-server.log")
        watch = Agent(venue, "watch", "watch", url, str(venue.ca))
        agents.append(watch)
        edges = {c: Agent(venue, c, "edge", url, str(venue.ca), c, str(tmp / "state"), str(tmp / f"{c}.pw"))
                 for c in CAMS}  # fmt: skip
        agents += edges.values()
        uplink = f"$SYS/broker/connection/{BRIDGE[0]}/state"  # notifications: named after remote_clientid
        wait(lambda: any(e["topic"] == uplink and e["payload"] == "1" for e in watch.lines()), 20, "the uplink",
             tmp / "watch.log", tmp / "venue-mosquitto.log")  # fmt: skip
        arrived = lambda: Counter(c for _, c, _ in central_occupancy(record))  # noqa: E731
        wait(lambda: arrived()["cam0"] >= 20 and arrived()["cam1"] > 0, 20, "counts at the central server",
             tmp / "cam0.log", tmp / "venue-mosquitto.log")  # fmt: skip
        live = lambda: venue.curl(f"{venue_url}/api/v1/events/ev/live") or {}  # noqa: E731
        wait(lambda: live().get("attendance", 0) > 0, 10, "attendance at the venue", tmp / "venue-server.log")

        # ---- the cut
        venue.link.set(False)
        cut_at = time.time()
        time.sleep(1)
        edges["cam1"].proc.send_signal(signal.SIGKILL)  # a camera dies while the venue is cut off
        before = live()
        wait(lambda: alerts(watch, "camera_offline", "cam1", "active"), STALE_S + 10,
             "the venue's alert for the dead camera at the venue", tmp / "venue-server.log")  # fmt: skip
        wait(lambda: any(e["topic"] == uplink and e["payload"] == "0" and e["t"] > cut_at for e in watch.lines()),
             CUT_S, "the bridge to notice the cut", tmp / "venue-mosquitto.log")  # fmt: skip
        time.sleep(max(0.0, cut_at + CUT_S - 1 - time.time()))
        during = live()
        up_at = time.time()
        assert up_at - cut_at >= CUT_S - 1.5
        venue.link.set(True)

        # the venue kept counting and alerting on its own
        people = lambda view: next(s["people"] for s in view["sections"] if s["id"] == "s00")  # noqa: E731 (cam0's)
        assert people(during) >= people(before) + CUT_S - 4, (people(before), people(during))  # 2/s published
        assert {c["id"]: c["state"] for c in during["cameras"]}["cam1"] == "offline"
        offline = alerts(watch, "camera_offline", "cam1", "active")
        assert cut_at < offline[0]["t"] < up_at, "the venue's alert reached the venue during the cut"
        late = [(t, c, s) for t, c, s in central_occupancy(record) if cut_at + 1 < t < up_at]
        assert not late, f"the uplink was not cut: {len(late)} counts reached the central server during the cut"
        edge_states = [e["state"] for e in edges["cam0"].lines() if "state" in e]
        assert edge_states == ["up"], f"the edge must not notice the uplink: {edge_states}"

        # ---- back: everything arrives, once; the central alerts raised during the cut reach the venue
        wait(lambda: any(e["topic"] == uplink and e["payload"] == "1" and e["t"] > up_at for e in watch.lines()),
             30, "the bridge to reconnect", tmp / "venue-mosquitto.log")  # fmt: skip
        stale = lambda: [e for e in alerts(watch, "camera_stale", "cam0", "active") if e["t"] > up_at]  # noqa: E731
        wait(stale, 20, "the central server's stale alert of the cut at the venue", tmp / "central-server.log")
        raised = datetime.fromisoformat(json.loads(stale()[0]["payload"])["ts"]).timestamp()
        assert cut_at < raised < up_at, "raised centrally during the cut, delivered after it"
        wait(lambda: [e for e in alerts(watch, "camera_stale", "cam0", "cleared") if e["t"] > up_at], 30,
             "the central stale alert to clear once the queue drained", tmp / "central-server.log")  # fmt: skip

        edges["cam0"].stop()
        queued, last = spool_state(tmp / "state" / f"{VENUE}-cam0.sqlite")
        assert not queued, "the edge handed everything to the venue broker"
        first = next(e["first_seq"] for e in edges["cam0"].lines() if "first_seq" in e)
        want = set(range(first, last + 1))
        got = lambda c: [s for _, cam, s in central_occupancy(record) if cam == c]  # noqa: E731
        wait(lambda: set(got("cam0")) >= want, 30, "every seq at the central server", tmp / "venue-mosquitto.log")
        time.sleep(1)  # nothing more may come
        received = [(c, s) for _, c, s in central_occupancy(record)]
        cam0 = got("cam0")
        assert set(cam0) == want, f"{len(want - set(cam0))} of {len(want)} seqs lost"
        first_seen = list(dict.fromkeys(cam0))
        assert first_seen == sorted(first_seen), "in seq order"
        distinct, dups = len(set(received)), len(received) - len(set(received))
        applied = metric(central_srv.url, "turnout_messages_applied_total", '{kind="occupancy"}')
        assert applied == distinct, f"applied {applied:g}, distinct (camera, seq) received {distinct}"
        twice = [k for k, n in Counter(received).items() if n > 1]
        print(f"\nuplink cut {up_at - cut_at:.1f} s (bridge keepalive {BRIDGE_KEEPALIVE.get('keepalive_interval', 'as shipped')}): cam0 {len(want)} seqs, "
              f"{sum(1 for t, c, _ in central_occupancy(record) if c == 'cam0' and t > up_at)} delivered after the cut, "
              f"0 lost, {dups} duplicates dropped ({twice[:3]}); applied {applied:g} = distinct {distinct}; "
              f"venue section s00 {people(before)} -> {people(during)} people during the cut; "
              f"venue alert at +{offline[0]['t'] - cut_at:.1f} s, central alert delivered at +{stale()[0]['t'] - up_at:.1f} s "
              "after the link was back")  # fmt: skip
    finally:
        for a in agents:
            a.stop()
        stop_process(venue_srv)
        central_srv.kill()


# ---------------------------------------------------------------------------------- agents (in the venue)
def _note(path: Path, **fields: object) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"t": time.time(), **fields}) + "\n")


def _run_edge(events: Path, stop: Path, url: str, ca: str, camera: str, state_dir: str, pw_file: str) -> None:
    from edge.config import MqttConfig, TlsConfig
    from edge.publisher import Publisher
    from turnout.contract import CameraState, Occupancy, Processing, SectionCount, utcnow

    cfg = MqttConfig(url=url, username="{venue}/{camera}", password_file=Path(pw_file),
                     tls=TlsConfig(ca_file=Path(ca)), keepalive_s=5)  # fmt: skip
    pub = Publisher(cfg, venue=VENUE, camera=camera, state_dir=Path(state_dir))
    pub.start()
    pub.set_status(CameraState.ONLINE)
    up, first, next_at = False, None, time.monotonic()
    while not stop.exists():
        if time.monotonic() >= next_at:
            seq = pub.next_seq()
            if first is None:
                first = seq
                _note(events, first_seq=seq)
            occupied = min(500, 100 + (seq - first) // 5)  # the crowd grows: 2 people a second in each section
            sections = [SectionCount(id=s, seats=500, occupied=occupied, people=occupied) for s in SECTIONS[camera]]
            pub.publish_occupancy(Occupancy(venue=VENUE, camera=camera, seq=seq, ts=utcnow(), sections=sections,
                                            model="test", processing=Processing(fps=10, latency_ms=5, frames=seq)))  # fmt: skip
            next_at += 0.1
        if pub.connected != up:
            up = pub.connected
            _note(events, state="up" if up else "down")
        time.sleep(0.01)
    pub.stop()


def _run_watch(events: Path, stop: Path, url: str, ca: str) -> None:
    """An organizer's app at the venue: alerts and the uplink state, from the venue broker."""
    from urllib.parse import urlparse

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    u = urlparse(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ORGANIZER[0])
    c.username_pw_set(*ORGANIZER)
    c.tls_set(ca_certs=ca)
    c.on_connect = lambda cl, *_: cl.subscribe([(f"turnout/v1/{VENUE}/alerts/#", 1), ("$SYS/broker/connection/#", 1)])
    c.on_message = lambda _c, _u, m: _note(events, topic=m.topic, payload=m.payload.decode(), retain=bool(m.retain))
    c.connect(u.hostname or "127.0.0.1", u.port or 8883)
    c.loop_start()
    while not stop.exists():
        time.sleep(0.1)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    role, events_file, stop_file, *rest = sys.argv[1:]
    if role == "edge":
        _run_edge(Path(events_file), Path(stop_file), *rest)
    else:
        _run_watch(Path(events_file), Path(stop_file), *rest)
