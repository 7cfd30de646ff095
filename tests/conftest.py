"""Fixtures shared by the whole suite: real data in ../shared, real Mosquitto brokers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from turnout.embedded_broker import stop_process
from turnout.paths import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real models and data (`TURNOUT_SHARED`, set by .ci/run and scripts/test.sh)."""
    path = shared_dir()
    if path is None or not (path / "models").is_dir():
        pytest.fail("real data not found: set TURNOUT_SHARED to the shared/ folder (see README)")
    return path


@pytest.fixture(scope="session")
def model_path(shared: Path) -> Path:
    return shared / "models" / "yolo11n-recon.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_listening(port: int, timeout: float = 10.0) -> bool:
    """Wait until something listens on TCP ``port`` on this host, read from /proc/net/tcp{,6} without connecting:
    a server that serves exactly one client (``ffmpeg -listen 1``) is not used up by the check."""
    deadline = time.monotonic() + timeout
    while True:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@dataclass
class Broker:
    """A real Mosquitto this test owns: it can be stopped and started again on the same port."""

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.workdir}/\nmax_queued_messages 100000\n"
            # as root, mosquitto switches to user "mosquitto", which cannot save into pytest's tmp dir
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto on a free port, for fault injection (kill / restart)."""
    broker = Broker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def system_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The machine's Mosquitto at 127.0.0.1:1883 when it runs, otherwise one started for the session."""
    host, port = os.environ.get("TURNOUT_TEST_MQTT", "127.0.0.1:1883").split(":")
    if port_open(host, int(port)):
        yield Broker(host, int(port), tmp_path_factory.mktemp("mqtt"))
        return
    broker = Broker("127.0.0.1", free_port(), tmp_path_factory.mktemp("mqtt"))
    broker.start()
    yield broker
    broker.stop()


def retained_topics(host: str, port: int, topic_filter: str) -> set[str]:
    """Topics under ``topic_filter`` that hold a retained message on a broker (none if it is not running)."""
    from tests.edge.mqtt_tools import Recorder

    try:
        rec = Recorder(host, port, topic_filter)
    except (OSError, RuntimeError):
        return set()
    try:
        rec.barrier()  # the retained copies come right after SUBSCRIBE, before the barrier's marker
        return {m.topic for m in rec.messages if m.retain and m.payload}
    finally:
        rec.close()


def clear_retained(host: str, port: int, prefix: str) -> int:
    """Delete every retained message under ``prefix`` (``turnout/v1/{venue}``) on a broker; how many.

    Tests on the shared broker at 127.0.0.1:1883 call it when done, so a user's
    ``mosquitto_sub -t 'turnout/v1/#'`` shows nothing they left behind (statuses, alerts, layouts).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topics = retained_topics(host, port, f"{prefix}/#")
    if not topics:
        return 0
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cleanup-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    try:
        for topic in sorted(topics):
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(topics)


@pytest.fixture
def venue_id(request: pytest.FixtureRequest) -> Iterator[str]:
    """A venue id no other test (or earlier run) uses, so topics never collide on a shared broker; what
    a test on the shared broker left retained under it is deleted afterwards."""
    venue = f"t{uuid.uuid4().hex[:10]}"
    yield venue
    if "system_broker" in request.fixturenames:
        broker = request.getfixturevalue("system_broker")
        clear_retained(broker.host, broker.port, f"turnout/v1/{venue}")
