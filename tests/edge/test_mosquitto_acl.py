"""deploy/mosquitto/ runs as shipped (TLS, passwords, per-camera ACL) and keeps clients in their lanes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.config import MqttConfig, TlsConfig
from edge.publisher import BrokerUnreachable, Publisher, check_reachable
from edge.publisher import client_id as publisher_client_id
from server.ingest import MqttBridge
from server.settings import load_settings
from tests.conftest import free_port, port_open
from tests.edge.mqtt_tools import Recorder, occupancy
from tests.server.test_delivery_broker import RecordingHub
from turnout import contract
from turnout.contract import Status

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
SERVER = ("turnout-server", "server-pw")
ORGANIZER = ("organizer-ann", "organizer-pw")  # organizer of the test venue
OTHER_ORGANIZER = ("organizer-bob", "organizer-bob-pw")  # organizer of another venue only
WATCHER = ("organizer-cat", "organizer-cat-pw")  # another organizer of the test venue: only ever reads


@dataclass
class SecureBroker:
    port: int
    ca: Path
    venue: str
    workdir: Path

    @property
    def other_venue(self) -> str:
        return f"{self.venue}-other"

    def user(self, camera: str) -> tuple[str, str]:
        return f"{self.venue}/{camera}", f"pw-{camera}"

    def cfg(self, **kw: object) -> MqttConfig:
        return MqttConfig(url=f"mqtts://127.0.0.1:{self.port}", tls=TlsConfig(ca_file=self.ca), **kw)

    def recorder(self, topic: str, auth: tuple[str, str]) -> Recorder:
        return Recorder("127.0.0.1", self.port, topic, auth=auth, ca_file=self.ca)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=turnout-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=d)  # fmt: skip


@pytest.fixture
def secure_broker(tmp_path: Path, venue_id: str) -> Iterator[SecureBroker]:
    """deploy/mosquitto/mosquitto.conf and acl as shipped, with only paths and the port changed."""
    for tool in ("mosquitto_passwd", "openssl"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (apt-get install mosquitto-clients openssl)")
    etc = tmp_path / "etc"
    etc.mkdir()
    _make_certs(etc)
    broker = SecureBroker(free_port(), etc / "ca.crt", venue_id, tmp_path)
    # organizers are added as README.md says: one block per organizer, one line per venue
    acl = (DEPLOY / "acl").read_text()
    acl += f"\nuser {ORGANIZER[0]}\ntopic read turnout/v1/{broker.venue}/alerts/+\n"
    acl += f"\nuser {OTHER_ORGANIZER[0]}\ntopic read turnout/v1/{broker.other_venue}/alerts/+\n"
    acl += f"\nuser {WATCHER[0]}\ntopic read turnout/v1/{broker.venue}/alerts/+\n"
    (etc / "acl").write_text(acl)
    passwd = etc / "passwd"
    users = [SERVER, ORGANIZER, OTHER_ORGANIZER, WATCHER, broker.user("cam-a"), broker.user("cam-b"),
             broker.user("alerts")]
    for i, (user, password) in enumerate(users):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *flags, "-b", str(passwd), user, password], check=True)
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/turnout/", f"{etc}/").replace("/var/lib/mosquitto/", f"{tmp_path}/")
    conf = re.sub(r"^listener 8883$", f"listener {broker.port} 127.0.0.1", conf, flags=re.M)
    if os.geteuid() == 0:  # as root, mosquitto would switch to user "mosquitto", locked out of tmp_path
        conf += "\nuser root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = open(tmp_path / "mosquitto.log", "wb")  # noqa: SIM115
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", broker.port):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mosquitto did not start:\n{(tmp_path / 'mosquitto.log').read_text()}")
        time.sleep(0.05)
    yield broker
    proc.terminate()
    proc.wait(5)


def publish_as(
    broker: SecureBroker, auth: tuple[str, str], topic: str, payload: bytes, retain: bool = False
) -> int:
    """Publish one QoS 1 message over MQTT v5 as `auth`; return the PUBACK reason code."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    client.username_pw_set(*auth)
    client.tls_set(ca_certs=str(broker.ca))
    codes: list[int] = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: codes.append(reason.value)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert codes, f"no PUBACK for {topic}"
    return codes[0]


def settle(broker: SecureBroker, organizer: Recorder, venue: str | None = None) -> tuple[str, bytes]:
    """Wait until everything the broker routed to an organizer's subscriber so far has arrived: the server
    publishes a marker alert (not retained) of the organizer's venue, which is queued behind them. Returns the
    marker's (topic, payload)."""
    marker = (contract.alert_topic(venue or broker.venue, "camera_offline"), f"marker-{uuid.uuid4().hex}".encode())
    assert publish_as(broker, SERVER, *marker) < 0x80
    assert organizer.wait_for(lambda r: (marker[0], marker[1]) in [(m.topic, m.payload) for m in r.messages], 5)
    return marker


def test_shipped_config_refuses_anonymous_and_plaintext() -> None:
    conf = (DEPLOY / "mosquitto.conf").read_text()
    active = [line.split() for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    settings = {words[0]: words[1:] for words in active}
    assert settings["allow_anonymous"] == ["false"]
    assert "password_file" in settings and "acl_file" in settings
    listeners = [i for i, words in enumerate(active) if words[0] == "listener"]
    for start, end in zip(listeners, [*listeners[1:], len(active)], strict=True):
        keys = {words[0] for words in active[start:end]}
        assert {"certfile", "keyfile"} <= keys, f"listener {active[start][1:]} has no TLS"


def test_anonymous_and_wrong_password_are_refused(secure_broker: SecureBroker, tmp_path: Path) -> None:
    where = rf"127\.0\.0\.1:{secure_broker.port} refused"
    with pytest.raises(BrokerUnreachable, match=where):
        check_reachable(secure_broker.cfg(), timeout=5)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    with pytest.raises(BrokerUnreachable, match=where):
        check_reachable(secure_broker.cfg(username=SERVER[0], password_file=wrong), timeout=5)
    right = tmp_path / "right.pass"
    right.write_text(SERVER[1])
    check_reachable(secure_broker.cfg(username=SERVER[0], password_file=right), timeout=5)


def test_edge_user_writes_only_its_own_camera(secure_broker: SecureBroker, tmp_path: Path) -> None:
    b = secure_broker
    server = b.recorder(f"turnout/v1/{b.venue}/#", SERVER)
    for camera in ("cam-a", "cam-b"):
        (tmp_path / f"{camera}.pass").write_text(b.user(camera)[1] + "\n")
    cfg = b.cfg(username="{venue}/{camera}", password_file=tmp_path / "{camera}.pass")
    check_reachable(cfg, timeout=5, venue=b.venue, camera="cam-a")
    pub = Publisher(cfg, venue=b.venue, camera="cam-a", state_dir=tmp_path / "state")
    pub.start()
    try:
        pub.publish_occupancy(occupancy(b.venue, "cam-a", pub.next_seq()))
        assert server.wait_for(lambda r: len(r.on("cam-a/occupancy")) == 1, 10), "own camera refused"
        assert server.on("cam-a/status"), "status (and last will) topic must be writable by the camera"
        assert pub.stats.dropped == 0
    finally:
        pub.stop()

    cam_a = b.user("cam-a")
    refused = {
        contract.occupancy_topic(b.venue, "cam-b"): publish_as(b, cam_a, contract.occupancy_topic(b.venue, "cam-b"), b"x"),
        contract.status_topic(b.venue, "cam-b"): publish_as(b, cam_a, contract.status_topic(b.venue, "cam-b"), b"x"),
        contract.layout_topic(b.venue, "cam-a"): publish_as(b, cam_a, contract.layout_topic(b.venue, "cam-a"), b"x"),
        contract.alert_topic(b.venue, "camera_offline"): publish_as(
            b, cam_a, contract.alert_topic(b.venue, "camera_offline"), b"x"
        ),
    }  # fmt: skip
    assert all(code >= 0x80 for code in refused.values()), refused
    assert publish_as(b, cam_a, contract.occupancy_topic(b.venue, "cam-a"), b"ok") < 0x80
    # published after the refused ones, each acknowledged first: had the broker routed one, it came before this
    assert server.wait_for(lambda r: len(r.on("cam-a/occupancy")) == 2, 5)
    assert not [m.topic for m in server.messages if m.topic in refused]
    server.close()


def test_server_writes_alerts_that_organizers_read_but_cannot_write(secure_broker: SecureBroker) -> None:
    b = secure_broker
    topic = contract.alert_topic(b.venue, "overflow_decision")
    # another organizer of the venue watches (a user is one connection: ORGANIZER's publish would replace its own)
    watcher = b.recorder(f"turnout/v1/{b.venue}/#", WATCHER)
    assert publish_as(b, SERVER, topic, b"from-server") < 0x80
    assert publish_as(b, SERVER, contract.layout_topic(b.venue, "cam-a"), b"{}") < 0x80
    assert publish_as(b, ORGANIZER, topic, b"from-organizer") >= 0x80
    last = settle(b, watcher)
    assert [(m.topic, m.payload) for m in watcher.messages] == [(topic, b"from-server"), last]
    watcher.close()


def connect_as(broker: SecureBroker, auth: tuple[str, str], client_id: str) -> None:
    """Connect with `client_id` and a clean start (which would wipe that id's session), then leave."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(*auth)
    client.tls_set(ca_certs=str(broker.ca))
    done = threading.Event()
    client.on_connect = lambda *_: done.set()
    client.connect("127.0.0.1", broker.port, clean_start=True)
    client.loop_start()
    try:
        assert done.wait(5), f"{auth[0]} could not connect"
    finally:
        client.disconnect()
        client.loop_stop()


def test_nobody_takes_over_another_clients_session(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """Row 4: an organizer using the server's or an edge's client id neither kicks the edge nor empties the
    server's session: the 5 messages queued for the stopped server all reach it."""
    b = secure_broker
    settings = load_settings(
        None,
        mqtt_url=f"mqtts://127.0.0.1:{b.port}",
        mqtt_tls_ca=b.ca,
        mqtt_username=SERVER[0],
        mqtt_password=SERVER[1],
        database_url=f"sqlite:///{tmp_path / 'turnout.db'}",
    )
    server = MqttBridge(settings, RecordingHub())
    server.start()
    assert server.wait_connected(10)
    server.stop()  # away: the broker keeps its session and queues for it
    (tmp_path / "cam-a.pass").write_text(b.user("cam-a")[1])
    cfg = b.cfg(username="{venue}/{camera}", password_file=tmp_path / "{camera}.pass")
    pub = Publisher(cfg, venue=b.venue, camera="cam-a", state_dir=tmp_path / "state")
    pub.start()
    try:
        seqs = [pub.next_seq() for _ in range(5)]
        for seq in seqs:
            pub.publish_occupancy(occupancy(b.venue, "cam-a", seq))
        deadline = time.monotonic() + 10
        while (pub.stats.sent < 5 or not pub.connected) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.stats.sent == 5
        kicked = threading.Event()
        pub._client.on_disconnect = lambda *_: kicked.set()  # only for this test: any disconnect is a failure
        for client_id in (server.client_id, SERVER[0], publisher_client_id(cfg, b.venue, "cam-a"), b.user("cam-a")[0]):
            connect_as(b, ORGANIZER, client_id)
        hub = RecordingHub()
        again = MqttBridge(settings, hub)
        again.start()
        try:
            deadline = time.monotonic() + 10
            while hub.unique() < set(seqs) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            again.stop()
        assert sorted(hub.unique()) == seqs, f"{len(hub.unique())}/5 queued messages reached the server"
        assert not kicked.is_set(), "an organizer kicked the edge off"
        assert "offline" not in hub.statuses, "the edge's last will was published"
    finally:
        pub.stop(flush_s=0)


def test_organizers_read_only_their_venues_alerts(secure_broker: SecureBroker) -> None:
    b = secure_broker
    ann = b.recorder("turnout/v1/#", ORGANIZER)
    bob = b.recorder("turnout/v1/#", OTHER_ORGANIZER)
    mine, theirs = contract.alert_topic(b.venue, "camera_stale"), contract.alert_topic(b.other_venue, "camera_stale")
    try:
        assert publish_as(b, SERVER, mine, b"for-ann", retain=True) < 0x80
        assert publish_as(b, SERVER, theirs, b"for-bob", retain=True) < 0x80
        cam_a = b.user("cam-a")
        assert publish_as(b, cam_a, contract.occupancy_topic(b.venue, "cam-a"), b"occupancy") < 0x80
        ann_last, bob_last = settle(b, ann), settle(b, bob, b.other_venue)
        assert [(m.topic, m.payload) for m in ann.messages] == [(mine, b"for-ann"), ann_last]
        assert [(m.topic, m.payload) for m in bob.messages] == [(theirs, b"for-bob"), bob_last]
        ann.close()  # one connection per user: a second one for ann replaces the first
        late = b.recorder("turnout/v1/#", ORGANIZER)  # and retained copies: only its venue's
        late_last = settle(b, late)
        assert [(m.topic, m.retain) for m in late.messages] == [(mine, True), (late_last[0], False)]
        late.close()
    finally:
        ann.close()
        bob.close()
        publish_as(b, SERVER, mine, b"", retain=True)
        publish_as(b, SERVER, theirs, b"", retain=True)


def test_devices_read_only_their_own_commands(secure_broker: SecureBroker) -> None:
    b = secure_broker
    cam_a = b.recorder("turnout/v1/#", b.user("cam-a"))
    try:
        own = [contract.snapshot_request_topic(b.venue, "cam-a"), contract.layout_topic(b.venue, "cam-a")]
        others = [
            contract.snapshot_request_topic(b.venue, "cam-b"),
            contract.layout_topic(b.venue, "cam-b"),
            contract.alert_topic(b.venue, "overflow_decision"),
            contract.status_topic(b.venue, "cam-b"),
        ]
        for topic in [*others, *own]:
            assert publish_as(b, SERVER if "status" not in topic else b.user("cam-b"), topic, b"{}") < 0x80
        # the camera's own two come last (each publish acknowledged before the next): a leak arrives before them
        assert cam_a.wait_for(lambda r: len(r.messages) >= 2, 5)
        assert sorted(m.topic for m in cam_a.messages) == sorted(own)
    finally:
        cam_a.close()


def test_camera_named_alerts_cannot_publish_alerts(secure_broker: SecureBroker) -> None:
    """Row 16: a camera id `alerts` is refused by the contract, and its broker user cannot write alert topics."""
    b = secure_broker
    with pytest.raises(ValueError, match="reserved"):
        contract.status_topic(b.venue, "alerts")
    with pytest.raises(contract.PayloadError, match="reserved"):
        contract.decode(contract.Occupancy, occupancy(b.venue, "cam-a", 1).to_json().replace(b"cam-a", b"alerts"))
    with pytest.raises(ValueError, match="reserved"):
        contract.parse_topic(f"turnout/v1/{b.venue}/alerts/status")
    organizer = b.recorder(f"turnout/v1/{b.venue}/alerts/#", ORGANIZER)
    try:
        forged = Status(venue=b.venue, camera="cam-a", state="offline", ts=contract.utcnow()).to_json()
        for suffix in ("status", "occupancy", "snapshot", "layout/result"):
            code = publish_as(b, b.user("alerts"), f"turnout/v1/{b.venue}/alerts/{suffix}", forged)
            assert code >= 0x80, f"user {b.venue}/alerts may write alerts/{suffix}"
        assert publish_as(b, SERVER, contract.alert_topic(b.venue, "camera_offline"), b"real") < 0x80
        assert organizer.wait_for(lambda r: bool(r.messages), 5)  # published after the forged ones
        assert [m.payload for m in organizer.messages] == [b"real"]
    finally:
        organizer.close()
