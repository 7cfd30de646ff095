"""A cut link, tested the way it happens in a venue: 0 occupancy seqs lost (issue 8, "Delivery by default").

The edge publisher and the server each run in their own network namespace, joined to the broker (in the
root namespace) by a veth pair. The links are set down for LINK_CUT_S seconds (30 s, the issue's figure: both
connections time out on their keepalive and are dropped by the broker too), then brought back one after the
other, in both orders. The second case degrades both links with packet loss and delay instead: ``tc netem``
(80 ± 40 ms, 10 % loss each way) when the kernel has it, otherwise the same impairment applied by a userspace
link (tests/edge/linkemu.py: a TUN device in each namespace, packets carried, dropped and delayed by a
process in between). The server is the real `MqttBridge` with default settings (plus a 5 s keepalive so that
the cut is noticed within it); the edge is the real `Publisher`.

Needs root and ``ip`` (iproute2). Skipped, with the reason, where network namespaces cannot be created.
``TURNOUT_LINK_CUT_S=12`` shortens the cut (each order takes about LINK_CUT_S + 15 s).

The same file is the agent run inside each namespace: ``python -m tests.edge.test_delivery_netns edge|server``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open
from tests.edge.mqtt_tools import spool_state
from tests.server.test_delivery_broker import shipped_limits
from turnout.embedded_broker import stop_process

pytestmark = [pytest.mark.slow, pytest.mark.isolated]

ROOT = Path(__file__).resolve().parents[2]
LINK_CUT_S = float(os.environ.get("TURNOUT_LINK_CUT_S", "30"))
IMPAIRMENT = {"delay_ms": 80, "jitter_ms": 40, "loss": 0.10}  # each way
KEEPALIVE_S = 5
CAMERA = "cam-ns"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Link:
    """One namespace joined to the root namespace by a veth pair (host side `host_if`, address `host_ip`)."""

    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def create(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        for args in (["addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if], ["link", "set", self.ns_if, "up"],
                     ["link", "set", "lo", "up"]):  # fmt: skip
            sh("ip", "netns", "exec", self.ns, "ip", *args)

    def set(self, up: bool) -> None:
        sh("ip", "link", "set", self.host_if, "up" if up else "down")

    def degrade(self) -> str:
        """Loss and delay both ways with ``tc netem`` (the caller checked `netem_available`)."""
        d = IMPAIRMENT
        for dev, ns in ((self.host_if, None), (self.ns_if, self.ns)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{d['delay_ms']}ms",
               f"{d['jitter_ms']}ms", "loss", f"{d['loss'] * 100:g}%")  # fmt: skip
        return f"tc netem: {d['delay_ms']}±{d['jitter_ms']} ms delay, {d['loss']:.0%} loss each way"

    def totals(self) -> str:
        return ""

    def destroy(self) -> None:
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


@dataclass
class TunLink(Link):
    """The same link as `Link`, but carried by tests/edge/linkemu.py between two TUN devices, which can delay
    and drop packets like ``tc netem`` on a kernel without sch_netem."""

    proc: subprocess.Popen | None = None
    log: Path | None = None

    def create(self) -> None:
        sh("ip", "netns", "add", self.ns)
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"linkemu-{self.ns}.log"
        d = IMPAIRMENT
        cmd = [sys.executable, "-m", "tests.edge.linkemu", self.ns, self.host_if, self.ns_if,
               "--delay-ms", str(d["delay_ms"]), "--jitter-ms", str(d["jitter_ms"]), "--loss", str(d["loss"])]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        ready = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert ready == "ready", f"linkemu did not start: {ready} {self.proc.stdout.read()}"  # type: ignore[union-attr]
        sh("ip", "addr", "add", self.host_ip, "peer", self.ns_ip, "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        for args in (["addr", "add", self.ns_ip, "peer", self.host_ip, "dev", self.ns_if],
                     ["link", "set", self.ns_if, "up"], ["link", "set", "lo", "up"]):  # fmt: skip
            sh("ip", "netns", "exec", self.ns, "ip", *args)

    def degrade(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        d = IMPAIRMENT
        return (f"userspace link (tests/edge/linkemu.py, no sch_netem in this kernel): {d['delay_ms']}±"
                f"{d['jitter_ms']} ms delay, {d['loss']:.0%} loss each way")  # fmt: skip

    def totals(self) -> str:
        """What the emulator did (after `destroy`): packets carried, lost and the mean delay."""
        return self._totals

    _totals: str = ""

    def destroy(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
                self._totals = out.strip()
            finally:
                stop_process(self.proc)
                self.proc = None
        sh("ip", "netns", "del", self.ns, check=False)


def netem_available() -> bool:
    """Whether this kernel has ``tc netem`` (many VM kernels are built without sch_netem)."""
    tag = secrets.token_hex(3)
    if sh("ip", "link", "add", f"tnm{tag}a", "type", "veth", "peer", "name", f"tnm{tag}b", check=False).returncode:
        return False
    try:
        return sh("tc", "qdisc", "add", "dev", f"tnm{tag}a", "root", "netem", "delay", "1ms", check=False).returncode == 0
    finally:
        sh("ip", "link", "del", f"tnm{tag}a", check=False)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed: apt-get install iproute2"
    probe = f"tnp{secrets.token_hex(3)}"
    res = sh("ip", "netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"`ip netns add` not permitted here: {res.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Agent:
    """`python -m tests.edge.test_delivery_netns ROLE ...` inside a namespace; it reports through files."""

    def __init__(self, link: Link, role: str, workdir: Path, *args: str) -> None:
        self.events = workdir / f"{role}.events"
        self.log = workdir / f"{role}.log"
        self.stop_file = workdir / f"{role}.stop"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        cmd = ["ip", "netns", "exec", link.ns, sys.executable, "-m", "tests.edge.test_delivery_netns", role,
               str(self.events), str(self.stop_file), *args]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=ROOT, env=env)

    def lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def connected(self) -> bool:
        states = [x for x in self.lines() if x in ("up", "down")]
        return bool(states) and states[-1] == "up"

    def reconnections(self) -> int:
        return self.lines().count("up")

    def stop(self) -> None:
        self.stop_file.touch()
        try:
            self.proc.wait(30)
        finally:
            stop_process(self.proc)


@dataclass
class Setup:
    edge_link: Link
    server_link: Link
    workdir: Path
    port: int

    @property
    def spool(self) -> Path:
        return self.workdir / "state" / f"vnet-{CAMERA}.sqlite"


@contextmanager
def namespaces(tmp_path: Path, link_type: type[Link]) -> Iterator[Setup]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag, net = secrets.token_hex(2), f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(256)}"
    edge = link_type(f"tde{tag}", f"vde{tag}h", f"vde{tag}n", f"{net}.1", f"{net}.2")  # two /30 networks
    server = link_type(f"tds{tag}", f"vds{tag}h", f"vds{tag}n", f"{net}.5", f"{net}.6")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    limits = shipped_limits()  # deploy/mosquitto/mosquitto.conf's sessions and queues (not its TLS/ACL)
    keys = ("persistence", "autosave_interval", "max_queued_messages", "max_queued_bytes", "max_inflight_messages")
    conf.write_text(
        f"listener {port} {edge.host_ip}\nlistener {port} {server.host_ip}\nallow_anonymous true\n"
        f"persistence_location {tmp_path}/\n" + "".join(f"{k} {limits[k]}\n" for k in keys)
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    links: list[Link] = []
    broker = None
    try:
        for link in (edge, server):
            links.append(link)
            link.create()
        log = open(tmp_path / "mosquitto.log", "ab")  # noqa: SIM115
        broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                  stdout=log, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 10
        while not port_open(edge.host_ip, port):
            assert broker.poll() is None and time.monotonic() < deadline, (tmp_path / "mosquitto.log").read_text()
            time.sleep(0.05)
        yield Setup(edge, server, tmp_path, port)
    finally:
        if broker:
            stop_process(broker)
        for link in links:
            link.destroy()


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Setup]:
    """Edge and server namespaces joined to the broker by veth pairs."""
    with namespaces(tmp_path, Link) as setup:
        yield setup


@pytest.fixture
def lossy_netns(tmp_path: Path) -> Iterator[Setup]:
    """Links that can be degraded: veth pairs with ``tc netem`` where the kernel has it, else linkemu.py links."""
    if netns_unavailable() is None and not netem_available():
        with namespaces(tmp_path, TunLink) as setup:
            yield setup
        return
    with namespaces(tmp_path, Link) as setup:
        yield setup


def wait(cond: Callable[[], object], timeout: float, what: str, *agents: Agent) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {a.log.name}:\n{a.log.read_text()[-3000:]}" for a in agents)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")
        time.sleep(0.1)


def start_agents(s: Setup) -> tuple[Agent, Agent]:
    server = Agent(s.server_link, "server", s.workdir, f"mqtt://{s.server_link.host_ip}:{s.port}",
                   str(s.workdir / "server.seqs"), str(s.workdir / "server.db"))  # fmt: skip
    wait(server.connected, 20, "the server to connect", server)
    edge = Agent(s.edge_link, "edge", s.workdir, f"mqtt://{s.edge_link.host_ip}:{s.port}", str(s.workdir / "state"))
    wait(lambda: edge.connected() and len(received(s)) >= 20, 20, "first messages at the server", edge, server)
    return server, edge


def received(s: Setup) -> list[int]:
    path = s.workdir / "server.seqs"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def queued(s: Setup) -> int:
    return len(spool_state(s.spool)[0]) if s.spool.exists() else 0


def finish(s: Setup, server: Agent, edge: Agent) -> None:
    """Stop the edge (it delivers what it has queued), then check every seq from its first to its last."""
    edge.stop()
    _, last = spool_state(s.spool)
    first = next(json.loads(x)["first_seq"] for x in edge.lines() if x.startswith("{"))
    want = set(range(first, last + 1))
    deadline = time.monotonic() + 30
    while not set(received(s)) >= want and time.monotonic() < deadline:  # then the count of what is missing
        time.sleep(0.1)
    server.stop()
    got = received(s)
    missing = sorted(want - set(got))
    assert not missing, f"{len(missing)} of {len(want)} seqs lost: {missing[:10]}"
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sorted(first_seen), "delivery order must equal seq order"
    print(f"\n{len(want)} seqs, 0 lost, {len(got) - len(set(got))} duplicates, "
          f"edge connections {edge.reconnections()}, server connections {server.reconnections()}")  # fmt: skip


@pytest.mark.parametrize("first", ["edge", "server"])
def test_link_cut_loses_nothing_in_either_reconnection_order(netns: Setup, first: str) -> None:
    s = netns
    server, edge = start_agents(s)
    try:
        s.edge_link.set(False)
        s.server_link.set(False)
        cut_at = time.monotonic()
        # both connections time out (keepalive 5 s), as in a venue whose uplink is cut for LINK_CUT_S
        wait(lambda: not edge.connected() and not server.connected(), LINK_CUT_S + 15, "both to notice", edge, server)
        time.sleep(max(0.0, cut_at + LINK_CUT_S - time.monotonic()))  # the rest of the cut: the fault itself
        cut_s = time.monotonic() - cut_at
        assert queued(s) > 0, "the edge kept counting into its queue during the cut"
        one, other = (s.edge_link, s.server_link) if first == "edge" else (s.server_link, s.edge_link)
        one.set(True)
        if first == "edge":
            wait(lambda: edge.connected() and queued(s) == 0, 60, "the edge to flush to the broker", edge, server)
            assert not server.connected()
        else:
            wait(server.connected, 60, "the server to reconnect", edge, server)
            assert not edge.connected() and queued(s) > 0
        other.set(True)
        wait(lambda: edge.connected() and server.connected(), 60, "both reconnected", edge, server)
        assert edge.reconnections() >= 2 and server.reconnections() >= 2, "both connections were really lost"
        print(f"\nlinks down {cut_s:.1f} s; {first} reconnected first", end="")
        finish(s, server, edge)
    finally:
        edge.stop()
        server.stop()


def test_lossy_slow_link_loses_nothing(lossy_netns: Setup) -> None:
    s = lossy_netns
    server, edge = start_agents(s)
    try:
        how = [s.edge_link.degrade(), s.server_link.degrade()][0]
        print(f"\nlinks degraded: {how}")
        n = len(set(received(s)))
        wait(lambda: len(set(received(s))) >= n + 200, 90, "200 more messages over the bad links", edge, server)
        finish(s, server, edge)
    finally:
        edge.stop()
        server.stop()
    if isinstance(s.edge_link, TunLink):  # the impairment really happened (netem has no counters to read here)
        for link in (s.edge_link, s.server_link):
            link.destroy()
            print(f"{link.ns}: {link.totals()}")
            m = re.search(r"lost (\d+), (\d+) delayed by (\d+) ms", link.totals())
            assert m and int(m[1]) > 0 and int(m[2]) > 100 and 60 <= int(m[3]) <= 100, link.totals()


# ---------------------------------------------------------------------------------- agents (in a netns)
def _events(path: Path) -> Callable[[str], None]:
    def write(line: str) -> None:
        with open(path, "a") as f:
            f.write(line + "\n")

    return write


def _run_server(events: Path, stop: Path, url: str, seqs_file: Path, db: Path) -> None:
    from server.ingest import MqttBridge
    from server.settings import load_settings
    from turnout import contract

    note = _events(events)
    out = open(seqs_file, "a")  # noqa: SIM115

    class Hub:
        counters: dict[str, int] = {}

        def set_link(self, up: bool) -> None:
            note("up" if up else "down")

        def handle(self, topic: str, raw: bytes) -> None:
            if topic.endswith("/occupancy"):
                out.write(f"{contract.decode(contract.Occupancy, raw).seq}\n")
                out.flush()

    settings = load_settings(None, mqtt_url=url, database_url=f"sqlite:///{db}", mqtt_keepalive_s=KEEPALIVE_S)
    bridge = MqttBridge(settings, Hub())  # default session settings
    bridge.start()
    while not stop.exists():
        time.sleep(0.1)
    bridge.stop()


def _run_edge(events: Path, stop: Path, url: str, state_dir: Path) -> None:
    from edge.config import MqttConfig
    from edge.publisher import Publisher
    from tests.edge.mqtt_tools import occupancy

    note = _events(events)
    pub = Publisher(MqttConfig(url=url, keepalive_s=KEEPALIVE_S), venue="vnet", camera=CAMERA, state_dir=state_dir)
    pub.start()
    up = False
    first = None
    next_at = time.monotonic()
    while not stop.exists():
        if time.monotonic() >= next_at:
            seq = pub.next_seq()
            if first is None:
                first = seq
                note(json.dumps({"first_seq": seq}))
            pub.publish_occupancy(occupancy("vnet", CAMERA, seq))
            next_at += 0.05
        if pub.connected != up:
            up = pub.connected
            note("up" if up else "down")
        time.sleep(0.01)
    deadline = time.monotonic() + 25
    while pub.stats.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    pub.stop()


if __name__ == "__main__":
    role, events_file, stop_file, *rest = sys.argv[1:]
    if role == "server":
        _run_server(Path(events_file), Path(stop_file), rest[0], Path(rest[1]), Path(rest[2]))
    else:
        _run_edge(Path(events_file), Path(stop_file), rest[0], Path(rest[1]))
