"""The edge Publisher against real brokers: order, retained status, last will, protocols, bound, commands."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.config import MqttConfig, QueueConfig
from edge.publisher import BrokerUnreachable, Publisher, check_reachable
from tests.conftest import Broker, free_port, port_open
from tests.edge.mqtt_tools import Recorder, occupancy
from turnout import contract
from turnout.contract import CameraState, Occupancy, Status

CAM = "cam-1"


@pytest.fixture
def publisher_factory(tmp_path: Path) -> Iterator:
    made: list[Publisher] = []

    def make(cfg: MqttConfig, venue: str, camera: str = CAM) -> Publisher:
        pub = Publisher(cfg, venue=venue, camera=camera, state_dir=tmp_path / "state")
        made.append(pub)
        return pub

    yield make
    for pub in made:
        if not pub._stopping.is_set():
            pub.stop(flush_s=0.5)


def send(pub: Publisher, venue: str, n: int) -> list[int]:
    seqs = []
    for i in range(n):
        seq = pub.next_seq()
        pub.publish_occupancy(occupancy(venue, pub.camera, seq, frames=i))
        seqs.append(seq)
    return seqs


def wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def statuses(rec: Recorder) -> list[tuple[Status, bool]]:
    return [(contract.decode(Status, m.payload), m.retain) for m in rec.on("/status")]


def test_in_order_qos1_with_retained_online_then_offline(
    system_broker: Broker, venue_id: str, publisher_factory
) -> None:
    rec = Recorder(system_broker.host, system_broker.port, f"turnout/v1/{venue_id}/#")
    pub = publisher_factory(MqttConfig(url=system_broker.url), venue_id)
    pub.start()
    pub.set_status(CameraState.ONLINE)  # as the pipeline does once frames are analysed
    assert wait(lambda: pub.connected, 10), "publisher did not connect"
    assert pub.protocol == "5", "protocol auto must pick MQTT v5 on Mosquitto"
    seqs = send(pub, venue_id, 25)
    assert seqs == list(range(seqs[0], seqs[0] + 25))
    assert rec.wait_for(lambda r: len(r.seqs()) >= 25, 15), f"got {len(rec.seqs())} of 25"
    assert rec.seqs() == seqs
    payloads = [contract.decode(Occupancy, m.payload) for m in rec.on("/occupancy")]
    assert {(p.venue, p.camera) for p in payloads} == {(venue_id, CAM)}
    assert wait(lambda: pub.stats.queued == 0, 5)
    assert (pub.stats.sent, pub.stats.dropped) == (25, 0)

    late = Recorder(system_broker.host, system_broker.port, contract.status_topic(venue_id, CAM))
    assert late.wait_for(lambda r: bool(r.messages), 5)
    status, retained = statuses(late)[0]
    assert retained and status.state is CameraState.ONLINE

    pub.set_status(CameraState.DEGRADED, "stream lost")
    assert rec.wait_for(lambda r: statuses(r)[-1][0].state is CameraState.DEGRADED, 5)
    assert statuses(rec)[-1][0].reason == "stream lost"
    pub.stop()
    assert rec.wait_for(lambda r: statuses(r)[-1][0].state is CameraState.OFFLINE, 5)
    assert statuses(rec)[-1][0].reason == "stopped"
    later = Recorder(system_broker.host, system_broker.port, contract.status_topic(venue_id, CAM))
    assert later.wait_for(lambda r: bool(r.messages), 5)
    assert statuses(later)[0] == (statuses(rec)[-1][0], True)
    for r in (rec, late, later):
        r.close()


def test_forced_mqtt_311_end_to_end(system_broker: Broker, venue_id: str, publisher_factory) -> None:
    rec = Recorder(system_broker.host, system_broker.port, contract.occupancy_topic(venue_id, CAM))
    pub = publisher_factory(MqttConfig(url=system_broker.url, protocol="3.1.1"), venue_id)
    pub.start()
    seqs = send(pub, venue_id, 5)
    assert rec.wait_for(lambda r: len(r.seqs()) >= 5, 10)
    assert pub.protocol == "3.1.1"
    assert rec.seqs() == seqs
    rec.close()


_DRIVER = """
import sys, time
from pathlib import Path
from edge.config import MqttConfig
from edge.publisher import Publisher
from tests.edge.mqtt_tools import occupancy
from turnout.contract import CameraState
venue, url, state = sys.argv[1:4]
pub = Publisher(MqttConfig(url=url), venue=venue, camera="cam-1", state_dir=Path(state))
pub.start()
pub.set_status(CameraState.ONLINE)
for i in range(3):
    pub.publish_occupancy(occupancy(venue, "cam-1", pub.next_seq(), i))
while pub.stats.queued or not pub.connected:
    time.sleep(0.02)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_sets_offline_when_the_edge_is_killed(system_broker: Broker, venue_id: str, tmp_path: Path) -> None:
    rec = Recorder(system_broker.host, system_broker.port, contract.status_topic(venue_id, CAM))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_DRIVER), venue_id, system_broker.url, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert rec.wait_for(lambda r: bool(r.messages), 5)
        assert statuses(rec)[-1][0].state is CameraState.ONLINE
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert rec.wait_for(lambda r: statuses(r)[-1][0].state is CameraState.OFFLINE, 10), "no last will"
        assert "last will" in (statuses(rec)[-1][0].reason or "")
    finally:
        proc.kill()
        rec.close()
    late = Recorder(system_broker.host, system_broker.port, contract.status_topic(venue_id, CAM))
    assert late.wait_for(lambda r: bool(r.messages), 5)
    status, retained = statuses(late)[0]
    assert retained and status.state is CameraState.OFFLINE
    late.close()


def test_bound_while_broker_down_drops_oldest_then_delivers_the_rest(
    own_broker: Broker, venue_id: str, publisher_factory
) -> None:
    rec = Recorder(own_broker.host, own_broker.port, contract.occupancy_topic(venue_id, CAM), persistent=True)
    own_broker.stop()
    cfg = MqttConfig(url=own_broker.url, queue=QueueConfig(max_messages=10, overflow="drop_oldest"))
    pub = publisher_factory(cfg, venue_id)
    pub.start()  # broker down: must not raise
    seqs = send(pub, venue_id, 15)  # each committed to the spool (and the bound applied) before send returns
    assert not pub.connected
    assert (pub.stats.queued, pub.stats.dropped, pub.stats.sent) == (10, 5, 0)
    own_broker.start()
    assert rec.wait_for(lambda r: len(r.seqs()) >= 10, 20), f"got {rec.seqs()}"
    assert rec.seqs() == seqs[5:]
    assert pub.stats.dropped == 5
    rec.close()


def test_commands_are_resubscribed_after_a_broker_restart(own_broker: Broker, venue_id: str, publisher_factory) -> None:
    import paho.mqtt.publish as single

    got: list[tuple[str, bytes]] = []
    pub = publisher_factory(MqttConfig(url=own_broker.url), venue_id)
    topic = contract.snapshot_request_topic(venue_id, CAM)
    pub.subscribe(topic, lambda t, p: got.append((t, p)))
    pub.start()
    assert pub.wait_subscribed(10)  # connected and the SUBSCRIBE acknowledged
    single.single(topic, b"one", qos=1, hostname=own_broker.host, port=own_broker.port)
    assert wait(lambda: len(got) == 1, 5)
    own_broker.stop()
    assert wait(lambda: not pub.connected, 5)
    own_broker.start()
    assert pub.wait_subscribed(15), "publisher did not reconnect and resubscribe"
    single.single(topic, b"two", qos=1, hostname=own_broker.host, port=own_broker.port)
    assert wait(lambda: len(got) == 2, 5)
    assert got == [(topic, b"one"), (topic, b"two")]


def test_check_reachable_names_host_and_port(system_broker: Broker) -> None:
    check_reachable(MqttConfig(url=system_broker.url), timeout=3)
    port = free_port()
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
        check_reachable(MqttConfig(url=f"mqtt://127.0.0.1:{port}"), timeout=1)


def test_publish_for_another_camera_is_refused(system_broker: Broker, venue_id: str, publisher_factory) -> None:
    pub = publisher_factory(MqttConfig(url=system_broker.url), venue_id)
    with pytest.raises(ValueError, match="other-cam"):
        pub.publish_occupancy(occupancy(venue_id, "other-cam", 1))


@pytest.fixture
def amqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """amqtt speaks MQTT 3.1.1 only: a real broker that refuses v5."""
    exe = shutil.which("amqtt") or str(Path(sys.executable).parent / "amqtt")
    if not Path(exe).exists():
        pytest.fail("amqtt (server extra) is not installed")
    port = free_port()
    conf = tmp_path / "amqtt.yaml"
    conf.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    log = open(tmp_path / "amqtt.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "amqtt did not start"
        time.sleep(0.1)
    yield Broker("127.0.0.1", port, tmp_path, proc)
    proc.terminate()
    proc.wait(10)


def test_auto_falls_back_to_311_when_the_broker_refuses_v5(
    amqtt_broker: Broker, venue_id: str, publisher_factory
) -> None:
    cfg = MqttConfig(url=amqtt_broker.url, keepalive_s=5)
    check_reachable(cfg, timeout=5)  # v5 refused, 3.1.1 accepted: reachable
    rec = Recorder(amqtt_broker.host, amqtt_broker.port, contract.occupancy_topic(venue_id, CAM), v311=True)
    pub = publisher_factory(cfg, venue_id)
    pub.start()
    seqs = send(pub, venue_id, 3)
    assert rec.wait_for(lambda r: len(r.seqs()) >= 3, 20), "nothing arrived over the 3.1.1 fallback"
    assert pub.protocol == "3.1.1"
    assert rec.seqs() == seqs
    rec.close()
