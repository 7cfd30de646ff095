"""A cut link, tested the way it happens in a venue: 0 occupancy seqs lost (issue 8, "Delivery by default").

The edge publisher and the server each run in their own network namespace, joined to the broker (in the
root namespace) by a veth pair. The links are set down for LINK_CUT_S seconds (both connections time out on
their keepalive and are dropped by the broker too), then brought back one after the other, in both orders;
a second case degrades both links with packet loss and delay instead (``tc netem`` when the kernel has it,
otherwise nftables random loss plus a ``tc tbf`` bandwidth limit). The server is the real `MqttBridge` with
default settings (plus a short keepalive so a 12 s cut is noticed); the edge is the real `Publisher`.

Needs root, ``ip`` (iproute2) and, for the loss case, ``nft`` or ``tc netem``. Skipped, with the reason,
where network namespaces cannot be created. ``TURNOUT_LINK_CUT_S=30`` runs the issue's 30 s cut.

The same file is the agent run inside each namespace: ``python -m tests.edge.test_delivery_netns edge|server``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open
from tests.edge.mqtt_tools import spool_state
from turnout.embedded_broker import stop_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LINK_CUT_S = float(os.environ.get("TURNOUT_LINK_CUT_S", "12"))
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
        """Loss and delay both ways; returns what was used."""
        for dev, ns in ((self.host_if, None), (self.ns_if, self.ns)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            netem = sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "80ms", "40ms",
                       "loss", "10%", check=False)  # fmt: skip
            if netem.returncode != 0:
                break
        else:
            return "tc netem: 80±40 ms delay, 10 % loss each way"
        # this kernel has no netem: random loss with nftables inside the namespace, queueing delay with tbf
        rules = "table inet turnout_loss {\n"
        for chain, hook in (("in", "input"), ("out", "output")):
            rules += f"  chain {chain} {{\n    type filter hook {hook} priority 0;\n"
            rules += "    numgen random mod 100 < 10 drop\n  }\n"
        rules += "}\n"
        subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=rules, text=True, check=True)
        for dev, ns in ((self.host_if, None), (self.ns_if, self.ns)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "200kbit", "burst", "4kb",
               "latency", "300ms")  # fmt: skip
        return "nftables 10 % random loss each way + tc tbf 200 kbit/s (tc netem not in this kernel)"

    def destroy(self) -> None:
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


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


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Setup]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag, net = secrets.token_hex(2), f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(256)}"
    edge = Link(f"tde{tag}", f"vde{tag}h", f"vde{tag}n", f"{net}.1", f"{net}.2")  # two /30 networks
    server = Link(f"tds{tag}", f"vds{tag}h", f"vds{tag}n", f"{net}.5", f"{net}.6")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {edge.host_ip}\nlistener {port} {server.host_ip}\nallow_anonymous true\n"
        f"persistence true\npersistence_location {tmp_path}/\nmax_queued_messages 1000000\n"
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
    wait(lambda: set(received(s)) >= want, 30, "every seq at the server", edge, server)
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
        # both connections time out (keepalive 5 s): what a 30 s cut in a venue does, only shorter
        wait(lambda: not edge.connected() and not server.connected(), LINK_CUT_S + 15, "both to notice", edge, server)
        time.sleep(max(0.0, LINK_CUT_S - (KEEPALIVE_S * 2)))  # the rest of the cut: the fault itself, not a wait
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
        finish(s, server, edge)
    finally:
        edge.stop()
        server.stop()


def test_lossy_slow_link_loses_nothing(netns: Setup) -> None:
    s = netns
    server, edge = start_agents(s)
    try:
        how = [s.edge_link.degrade(), s.server_link.degrade()][0]
        print(f"\nlink degraded with {how}")
        n = len(set(received(s)))
        wait(lambda: len(set(received(s))) >= n + 100, 60, "100 more messages over the bad links", edge, server)
        finish(s, server, edge)
    finally:
        edge.stop()
        server.stop()


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
