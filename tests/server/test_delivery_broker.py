"""Delivery by default: the server's MQTT session survives a broker outage and a garbage flood (issue 8, rows 3, 5).

The server side is the real `MqttBridge` with default settings (only the broker URL and a database path set);
its hub is a `RecordingHub` that validates each message with the contract, as the live hub does, and
records the seqs it was handed. The edge side is the real `edge.publisher.Publisher` with its on-disk queue.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.publisher import Publisher
from server.ingest import MqttBridge
from server.settings import Settings, load_settings
from tests.conftest import Broker, free_port, port_open
from tests.edge.mqtt_tools import occupancy
from turnout import contract
from turnout.embedded_broker import stop_process

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
OUTAGE_S = float(os.environ.get("TURNOUT_OUTAGE_S", "30"))  # the 30 s (about 35 s per order)
FLOOD = int(os.environ.get("TURNOUT_FLOOD", "200000"))  # the figure (~90 s; runs beside the rest, marked isolated)


class RecordingHub:
    """What `MqttBridge` needs from the live hub; validates like it and records what it was handed."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.seqs: list[int] = []
        self.statuses: list[str] = []
        self.link = threading.Event()
        self._lock = threading.Lock()

    def set_link(self, up: bool) -> None:
        (self.link.set if up else self.link.clear)()

    def handle(self, topic: str, raw: bytes) -> None:
        with self._lock:
            self.counters["received"] += 1
            try:
                _venue, _camera, kind = contract.parse_topic(topic)
                if kind == "occupancy":
                    self.seqs.append(contract.decode(contract.Occupancy, raw).seq)
                elif kind == "status":
                    self.statuses.append(contract.decode(contract.Status, raw).state.value)
            except ValueError:  # PayloadError included
                self.counters["malformed"] += 1

    def unique(self) -> set[int]:
        with self._lock:
            return set(self.seqs)


def shipped_limits(conf: Path = DEPLOY_CONF) -> dict[str, str]:
    """The settings of a shipped Mosquitto config, each as first given (persistence and queue limits are
    broker-wide wherever they stand)."""
    out: dict[str, str] = {}
    for line in conf.read_text().splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            out.setdefault(words[0], " ".join(words[1:]))
    return out


class ShippedBroker(Broker):
    """A plain-TCP Mosquitto with the shipped config's persistence and queue limits (no TLS/ACL)."""

    def start(self) -> None:
        limits = shipped_limits()
        keys = ("persistence", "autosave_interval", "max_queued_messages", "max_queued_bytes", "max_inflight_messages")
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}", "allow_anonymous true", f"persistence_location {self.workdir}/"]
        lines += [f"{k} {limits[k]}" for k in keys]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")
            time.sleep(0.05)


@pytest.fixture
def shipped_broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    broker = ShippedBroker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    yield broker
    broker.stop()


def default_settings(broker: Broker, tmp_path: Path) -> Settings:
    """Server settings as a user gets them: nothing about sessions or client ids set."""
    return load_settings(None, mqtt_url=broker.url, database_url=f"sqlite:///{tmp_path / 'turnout.db'}")


def wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def wait_drained(hub: RecordingHub, done: Callable[[], bool], timeout: float, quiet_s: float = 3.0) -> None:
    """Wait until `done()` or until the hub has received nothing for `quiet_s` (the broker has no more)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while not done() and time.monotonic() < deadline:
        n = hub.counters["received"]
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.05)


class Ticker:
    """Publishes one occupancy message every `period` s through a real edge `Publisher`."""

    def __init__(self, pub: Publisher, venue: str, camera: str, period: float = 0.05) -> None:
        self.pub, self.venue, self.camera, self.period = pub, venue, camera, period
        self.seqs: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            seq = self.pub.next_seq()
            self.pub.publish_occupancy(occupancy(self.venue, self.camera, seq))
            self.seqs.append(seq)
            self._stop.wait(self.period)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        return self.seqs


# ------------------------------------------------------------------------------------------ settings
def test_default_server_session_is_persistent_and_stable(tmp_path: Path) -> None:
    a = load_settings(None, database_url=f"sqlite:///{tmp_path / 'a.db'}")
    again = load_settings(None, database_url=f"sqlite:///{tmp_path / 'a.db'}")
    other = load_settings(None, database_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert a.mqtt_client_id is None
    assert a.mqtt_session_id == again.mqtt_session_id, "the default client id must survive a restart"
    assert a.mqtt_session_id != other.mqtt_session_id, "two installations must not share one session"
    assert re.fullmatch(r"turnout-server-[A-Za-z0-9_.-]+-[0-9a-f]{8}", a.mqtt_session_id)
    assert a.mqtt_session_expiry_s >= 86400
    assert load_settings(None, mqtt_client_id="srv-1").mqtt_session_id == "srv-1"
    with pytest.raises(Exception, match="mqtt_session_expiry_s"):
        load_settings(None, mqtt_session_expiry_s=3600)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_sent_while_the_server_is_away_arrive_after_restart(
    own_broker: Broker, tmp_path: Path, venue_id: str, protocol: str
) -> None:
    """Default settings, MQTT 5 and 3.1.1: the broker queues QoS 1 occupancy for the stopped server."""
    settings = load_settings(
        None, mqtt_url=own_broker.url, database_url=f"sqlite:///{tmp_path / 'turnout.db'}", mqtt_protocol=protocol
    )
    first = MqttBridge(settings, RecordingHub())
    assert first.persistent
    first.start()
    assert first.wait_connected(10)
    first.stop()  # a clean stop too keeps the session
    pub = Publisher(MqttConfig(url=own_broker.url), venue=venue_id, camera="cam-1", state_dir=tmp_path / "state")
    pub.start()
    try:
        seqs = [pub.next_seq() for _ in range(5)]
        for seq in seqs:
            pub.publish_occupancy(occupancy(venue_id, "cam-1", seq))
        wait(lambda: pub.stats.queued == 0 and pub.stats.sent == 5, 10, "the broker to acknowledge all 5")
        hub = RecordingHub()
        second = MqttBridge(settings, hub)
        assert second.client_id == first.client_id
        second.start()
        try:
            wait(lambda: hub.unique() >= set(seqs), 10, "the 5 messages queued while the server was away")
        finally:
            second.stop()
    finally:
        pub.stop(flush_s=0)
    assert hub.seqs == seqs


@pytest.mark.parametrize("conf", ["mosquitto/mosquitto.conf", "server/mosquitto.conf", "venue/mosquitto.conf"])
def test_shipped_broker_config_keeps_sessions_on_disk(conf: str) -> None:
    """Every Mosquitto config in deploy/ (production, docker compose, venue bridge) keeps sessions and queues."""
    limits = shipped_limits(DEPLOY_CONF.parents[1] / conf)
    assert limits["persistence"] == "true" and limits.get("persistence_location")
    assert int(limits["autosave_interval"]) <= 60
    assert int(limits["max_queued_messages"]) >= max(FLOOD + 300, 1_000_000)  # deploy/mosquitto/README.md
    assert int(limits["max_queued_bytes"]) >= 100 * (FLOOD + 300)
    assert limits["persistent_client_expiration"].endswith("d") and int(limits["persistent_client_expiration"][:-1]) >= 1


# ------------------------------------------------------------------------------ retained occupancy
def test_retained_occupancy_is_never_applied(own_broker: Broker, tmp_path: Path, venue_id: str) -> None:
    """Row 1: a retained copy of an occupancy message must not be re-applied after every restart."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = contract.occupancy_topic(venue_id, "cam-r")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(own_broker.host, own_broker.port)
    client.loop_start()
    client.publish(topic, occupancy(venue_id, "cam-r", 7).to_json(), qos=1, retain=True).wait_for_publish(5)
    hub = RecordingHub()
    bridge = MqttBridge(default_settings(own_broker, tmp_path), hub)
    bridge.start()
    try:
        wait(lambda: hub.counters["retained_occupancy"] == 1, 10, "the retained copy to be counted")
        client.publish(topic, occupancy(venue_id, "cam-r", 8).to_json(), qos=1).wait_for_publish(5)
        wait(lambda: hub.seqs, 10, "the live message")
        assert hub.seqs == [8] and hub.counters["retained_occupancy"] == 1
    finally:
        bridge.stop()
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()


# ------------------------------------------------------------------------------------ broker outage
@pytest.mark.slow
@pytest.mark.isolated
@pytest.mark.parametrize("first", ["edge", "server"])
def test_broker_outage_loses_nothing_with_default_settings(
    shipped_broker: ShippedBroker, tmp_path: Path, venue_id: str, first: str
) -> None:
    """Row 3: the broker stops for OUTAGE_S while the edge runs; whichever reconnects first, every seq arrives."""
    hub = RecordingHub()
    bridge = MqttBridge(default_settings(shipped_broker, tmp_path), hub)
    bridge.start()
    assert bridge.wait_connected(10)
    cfg = MqttConfig(url=shipped_broker.url, keepalive_s=5)
    pub = Publisher(cfg, venue=venue_id, camera="cam-1", state_dir=tmp_path / "state")
    pub.start()
    ticker = Ticker(pub, venue_id, "cam-1")
    try:
        wait(lambda: len(hub.seqs) >= 10, 10, "messages before the outage")
        shipped_broker.stop()
        wait(lambda: not pub.connected and not bridge.connected.is_set(), 10, "both to notice the outage")
        # hold back the side that must reconnect second (its network thread paused, as if still unreachable)
        late = bridge.client if first == "edge" else pub._client
        late.loop_stop()
        time.sleep(OUTAGE_S)  # the outage itself: what is being simulated, not a wait for an event
        shipped_broker.start()
        if first == "edge":
            wait(lambda: pub.connected and pub.stats.queued == 0, 60, "the edge to flush its queue to the broker")
        else:
            wait(lambda: bridge.subscribed.is_set(), 60, "the server to reconnect and resubscribe")
            assert not pub.connected  # the server is back and idle while the edge is still away
        late.loop_start()
        wait(lambda: pub.connected and bridge.connected.is_set(), 60, "both reconnected")
        sent = ticker.stop()
        wait(lambda: pub.stats.queued == 0, 30, "the edge queue to drain")
        wait_drained(hub, lambda: hub.unique() >= set(sent), 30)
    finally:
        ticker.stop()
        pub.stop(flush_s=0)
        bridge.stop()
    missing = sorted(set(sent) - hub.unique())
    assert not missing, f"{len(missing)} of {len(sent)} seqs lost: {missing[:10]}"
    assert len(sent) > OUTAGE_S * 10, "the edge kept counting during the outage"
    first_seen = list(dict.fromkeys(hub.seqs))
    assert first_seen == sorted(first_seen), "delivery order must equal seq order"
    print(f"\n{len(sent)} seqs, 0 lost, {len(hub.seqs) - len(hub.unique())} duplicates ({first} reconnected first)")


# ------------------------------------------------------------------------------------- garbage flood
FLOODER = """
import sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
host, port, n, topic = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(5000)
up = threading.Event()
c.on_connect = lambda *a: up.set()
c.connect(host, port)
c.loop_start()
up.wait(10)
i, last = 0, None
while i < n:
    info = c.publish(topic, b'{"v":1,"garbage":%d,"seq":"x"}' % i, qos=1)
    if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
        time.sleep(0.0005)
        continue
    last, i = info, i + 1
last.wait_for_publish(120)
print("flooded", n, flush=True)
c.disconnect()
c.loop_stop()
"""


@pytest.mark.slow
@pytest.mark.isolated
def test_garbage_flood_does_not_push_out_another_cameras_messages(
    shipped_broker: ShippedBroker, tmp_path: Path, venue_id: str
) -> None:
    """Row 5: FLOOD QoS 1 garbage messages from one client while a camera sends 300: all 300 applied.

    The server's network thread is paused during the flood (the extreme of a server slower than the flood),
    so every message waits in the broker's queue for the server's session: the shipped queue limits must hold
    the flood and the camera's messages, which the server then applies.
    """
    hub = RecordingHub()
    bridge = MqttBridge(default_settings(shipped_broker, tmp_path), hub)
    bridge.start()
    assert bridge.wait_connected(10)
    pub = Publisher(MqttConfig(url=shipped_broker.url), venue=venue_id, camera="honest", state_dir=tmp_path / "s")
    pub.start()
    evil = contract.occupancy_topic(venue_id, "evil")
    bridge.client.loop_stop()
    t0 = time.monotonic()
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, shipped_broker.host, str(shipped_broker.port), str(FLOOD), evil],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sent: list[int] = []

    def send(n: int) -> None:
        for _ in range(n):
            seq = pub.next_seq()
            pub.publish_occupancy(occupancy(venue_id, "honest", seq))
            sent.append(seq)
            time.sleep(0.02)

    try:
        send(200)  # during the flood
        out, _ = flooder.communicate(timeout=120)
        assert flooder.returncode == 0, out
        flood_s = time.monotonic() - t0
        send(100)  # after it: behind the whole flood in the server's queue
        wait(lambda: pub.stats.queued == 0, 30, "the camera's 300 messages acknowledged by the broker")
        assert pub.stats.dropped == 0
        t1 = time.monotonic()
        bridge.client.loop_start()
        wait_drained(hub, lambda: hub.unique() >= set(sent) and hub.counters["malformed"] >= FLOOD, 120)
        drain_s = time.monotonic() - t1
    finally:
        stop_process(flooder)
        pub.stop(flush_s=0)
        bridge.stop()
    print(f"\nflood of {FLOOD} in {flood_s:.1f} s; server drained {FLOOD + 300} in {drain_s:.1f} s")
    missing = sorted(set(sent) - hub.unique())
    assert not missing, f"{len(missing)} of 300 acknowledged messages never reached the server"
    assert hub.counters["malformed"] == FLOOD
