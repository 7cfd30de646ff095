"""deploy/venue/mosquitto.conf as shipped (paths, ports, the central address and the retry timer changed):
the bridge carries counts up and alerts down over TLS with QoS 1, and keeps what the edges sent while the
central broker was away, delivered in order when it is back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port, port_open
from tests.edge.test_mosquitto_acl import _make_certs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENUE = "tulsa-bok"
CAMERA = ("tulsa-bok/cam-floor", "cam-pw")
SERVER = ("turnout-server", "server-pw")
BRIDGE = ("bridge-tulsa-bok", "bridge-pw")


class Mosquitto:
    def __init__(self, conf: str, port: int, workdir: Path, name: str) -> None:
        self.conf, self.port, self.workdir, self.name = conf, port, workdir, name
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        path = self.workdir / f"{self.name}.conf"
        path.write_text(self.conf + ("\nuser root\n" if os.geteuid() == 0 else ""))
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.workdir / f"{self.name}.log").read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def client(port: int, auth: tuple[str, str] | None, ca: Path | None, client_id: str, topic: str | None = None) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    """A connected MQTT 3.1.1 client (persistent session), subscribed to ``topic`` when given."""
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if auth:
        c.username_pw_set(*auth)
    if ca:
        c.tls_set(ca_certs=str(ca))
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1) if topic else subscribed.set()
    c.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((msg.topic, msg.payload))

    c.on_message = on_message
    c.reconnect_delay_set(0.2, 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert subscribed.wait(10), "client did not connect/subscribe"
    return c, got


def venue_conf(tmp: Path, passwd: Path, central: str, listener: str, *, acl: Path | None = None,
               **overrides: str) -> str:
    """deploy/venue/mosquitto.conf as shipped, with paths (certificates from `_make_certs` in ``tmp``), the
    listener (``"PORT ADDRESS"``), the central address (``"HOST:PORT"``), the bridge password and the retry
    timer changed; ``overrides`` replace other settings by name (``keepalive_interval="5"``)."""
    conf = (DEPLOY / "venue" / "mosquitto.conf").read_text()
    for old, new in (
        (r"^password_file .*$", f"password_file {passwd}"),
        (r"^acl_file .*$", f"acl_file {acl or DEPLOY / 'mosquitto' / 'acl'}"),
        (r"^persistence_location .*$", f"persistence_location {tmp}/venue/"),
        (r"^listener 8883$", f"listener {listener}"),
        (r"^cafile .*$", f"cafile {tmp}/ca.crt"),
        (r"^certfile .*$", f"certfile {tmp}/server.crt"),
        (r"^keyfile .*$", f"keyfile {tmp}/server.key"),
        (r"^address .*$", f"address {central}"),
        (r"^bridge_cafile .*$", f"bridge_cafile {tmp}/ca.crt"),
        (r"^remote_password .*$", f"remote_password {BRIDGE[1]}"),
        (r"^restart_timeout .*$", "restart_timeout 1 1"),  # the test does not wait for the production backoff
        *((rf"^{key} .*$", f"{key} {value}") for key, value in overrides.items()),
    ):
        conf, n = re.subn(old, new, conf, flags=re.M)
        assert n == 1, old
    return conf


@pytest.fixture
def brokers(tmp_path: Path) -> tuple[Mosquitto, Mosquitto, Path]:
    for tool in ("mosquitto_passwd", "openssl"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    _make_certs(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, pw in (CAMERA, SERVER, BRIDGE):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    central_port, central_plain, venue_port = free_port(), free_port(), free_port()
    (tmp_path / "central").mkdir()
    (tmp_path / "venue").mkdir()
    central = Mosquitto(
        f"per_listener_settings false\nallow_anonymous true\npassword_file {passwd}\npersistence true\n"
        f"persistence_location {tmp_path}/central/\nlistener {central_port} 127.0.0.1\ncafile {tmp_path}/ca.crt\n"
        f"certfile {tmp_path}/server.crt\nkeyfile {tmp_path}/server.key\nlistener {central_plain} 127.0.0.1\n",
        central_port, tmp_path, "central",
    )
    conf = venue_conf(tmp_path, passwd, f"127.0.0.1:{central_port}", f"{venue_port} 127.0.0.1")
    venue = Mosquitto(conf, venue_port, tmp_path, "venue")
    central.start()
    venue.start()
    yield central, venue, tmp_path
    venue.stop()
    central.stop()


def test_bridge_up_down_and_through_an_outage(brokers: tuple[Mosquitto, Mosquitto, Path]) -> None:
    central, venue, tmp = brokers
    ca = tmp / "ca.crt"
    plain = int(re.findall(r"listener (\d+)", central.conf)[1])
    up_topic = f"turnout/v1/{VENUE}/cam-floor/occupancy"
    clients: list[mqtt.Client] = []
    try:
        sub, got_up = client(plain, None, None, f"central-sub-{uuid.uuid4().hex[:6]}", f"turnout/v1/{VENUE}/#")
        clients.append(sub)
        down, got_down = client(venue.port, SERVER, ca, "turnout-server", f"turnout/v1/{VENUE}/alerts/#")
        clients.append(down)
        cam, _ = client(venue.port, CAMERA, ca, CAMERA[0])
        clients.append(cam)

        def wait(pred, what: str, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + timeout
            while not pred():
                assert time.monotonic() < deadline, f"timed out: {what}; venue log:\n" + (tmp / "venue.log").read_text()[-1500:]
                time.sleep(0.05)

        # the bridge connects: a count goes up (retry until the bridge is there: nothing is queued before)
        for i in range(100):
            cam.publish(up_topic, f'{{"seq": -{i}}}', qos=1).wait_for_publish(5)
            if got_up:
                break
            time.sleep(0.2)
        wait(lambda: got_up, "a count reaches the central broker")
        central_client, _ = client(plain, None, None, "central-server")
        clients.append(central_client)
        central_client.publish(f"turnout/v1/{VENUE}/alerts/overflow_decision", b'{"state": "cancel_overflow"}', qos=1, retain=True).wait_for_publish(5)
        wait(lambda: any(t.endswith("/alerts/overflow_decision") for t, _ in got_down), "the alert reaches the venue")

        # the central broker goes away: the edge keeps publishing to the venue, which queues on disk
        central.stop()
        sent = [f'{{"seq": {i}}}'.encode() for i in range(1, 41)]
        for payload in sent:
            cam.publish(up_topic, payload, qos=1).wait_for_publish(5)  # acknowledged by the venue broker
        time.sleep(0.5)
        central.start()  # back: the bridge reconnects and delivers the queue in order
        wait(lambda: sum(1 for t, p in got_up if t == up_topic and p in sent) >= len(sent), "the queue drains", 30)
        arrived = [p for t, p in got_up if t == up_topic and p in sent]
        assert arrived == sent, "every queued count, once, in order"
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
