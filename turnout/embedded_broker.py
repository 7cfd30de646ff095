"""An MQTT broker for the demo: Mosquitto where installed, otherwise the embedded amqtt broker.

amqtt speaks MQTT 3.1.1 only; the edge and the server fall back to it on their own. It keeps retained
messages in memory, which is all the demo needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class RunningBroker(Protocol):
    host: str
    port: int
    kind: str

    def stop(self) -> None: ...


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Ask a child process to stop (``sig``), and kill it if it has not exited within ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for children that must not outlive this process, however it ends (kill -9
    included): on Linux the kernel sends the child SIGTERM when the thread that started it dies. None
    elsewhere (there a killed parent still leaves the child running). Start children from the main thread.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only makes the call
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: nobody will send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """True once something accepts connections on host:port, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """amqtt running on its own event loop in a daemon thread."""

    kind = "amqtt (embedded)"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"embedded MQTT broker did not start on {self.host}:{self.port}: {self._error}")
        if not wait_for_port(self.host, self.port, timeout):
            raise RuntimeError(f"embedded MQTT broker does not accept connections on {self.host}:{self.port}")
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every port probe and protocol fallback as an error; keep the demo's console readable
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def _start() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        try:
            loop.run_until_complete(_start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=5)


class MosquittoBroker:
    """A private Mosquitto process on a free port (no persistence: the demo starts clean)."""

    kind = "mosquitto"

    def __init__(self, exe: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.exe = exe
        self.host = host
        self.port = port or free_port(host)
        self._dir = tempfile.TemporaryDirectory(prefix="turnout-mosquitto-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        conf = Path(self._dir.name) / "mosquitto.conf"
        # `user`: run as whoever runs the demo; started as root, mosquitto would switch to its own user, and a
        # change of user clears the "die with the parent" signal (prctl(2))
        user = pwd.getpwuid(os.getuid()).pw_name
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\nuser {user}\n")
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        self.proc = None
        self._dir.cleanup()


def mosquitto_exe() -> str | None:
    """Path of the mosquitto binary if installed (PATH or Debian's /usr/sbin)."""
    exe = shutil.which("mosquitto")
    if exe:
        return exe
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def start_broker(prefer_embedded: bool = False, port: int | None = None) -> RunningBroker:
    """Start Mosquitto if installed (unless `prefer_embedded`), else the embedded amqtt broker."""
    exe = None if prefer_embedded else mosquitto_exe()
    if exe:
        return MosquittoBroker(exe, port=port).start()
    log.info("mosquitto not installed: using the embedded amqtt broker (MQTT 3.1.1)")
    return EmbeddedBroker(port=port).start()
