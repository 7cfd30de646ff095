"""MQTT publisher of one camera, with store-and-forward (see docs/mqtt.md).

One `Publisher` = one MQTT client (client id ``{prefix}-{venue}-{camera}``) with its own last will: the
retained status topic set to ``offline``. Occupancy messages are first committed to the camera's `Spool`
(SQLite file in ``state_dir``); a sender thread hands them to paho in order, at most `WINDOW` at a time,
and deletes each from the spool only once the broker's QoS 1 PUBACK came back. paho keeps unacknowledged
messages in memory and re-sends them, in order, after it reconnects; messages still in the spool when the
process dies are sent again after restart, so delivery is at-least-once and the server deduplicates by
``(camera, seq)``.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import ConfigError, MqttConfig
from edge.spool import Spool
from turnout import contract
from turnout.contract import CameraState, CountCalibration, Occupancy, Status

log = logging.getLogger(__name__)

WINDOW = 20
"""Spooled messages handed to paho at once (in flight, awaiting PUBACK)."""
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
STOP_FLUSH_S = 5.0

# CONNACK codes meaning "this broker does not speak MQTT v5" (v5 0x84, or a 3.1.1 broker's code 1).
_UNSUPPORTED_PROTOCOL = {0x84, 1}


class BrokerUnreachable(ConnectionError):
    """The MQTT broker cannot be reached or refused the connection; the message names host:port."""


@dataclass(frozen=True)
class PublisherStats:
    queued: int  # messages on disk awaiting the broker's acknowledgement
    sent: int  # messages acknowledged by the broker since this process started
    dropped: int  # messages lost to the queue bound (or refused by the broker) since the queue was created


def client_id(cfg: MqttConfig, venue: str, camera: str) -> str:
    return f"{cfg.client_id_prefix}-{venue}-{camera}"


def spool_path(state_dir: Path, venue: str, camera: str) -> Path:
    return Path(state_dir) / f"{venue}-{camera}.sqlite"


def _protocol(cfg: MqttConfig) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv311 if cfg.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5


def _fill(template: str, venue: str | None, camera: str | None) -> str:
    if venue is not None:
        template = template.replace("{venue}", venue)
    if camera is not None:
        template = template.replace("{camera}", camera)
    return template


def is_templated(value: object) -> bool:
    return value is not None and ("{venue}" in str(value) or "{camera}" in str(value))


def credentials(cfg: MqttConfig, venue: str | None, camera: str | None) -> tuple[str | None, str | None]:
    """User name and password for one camera's connection.

    ``username`` and ``password_file`` may contain ``{venue}`` and ``{camera}``, so that each camera logs in
    as its own broker user (``username: "{venue}/{camera}"`` matches the ACL in deploy/mosquitto/).
    """
    if not cfg.username:
        return None, None
    user = _fill(cfg.username, venue, camera)
    if cfg.password_file and is_templated(cfg.password_file):
        path = Path(_fill(str(cfg.password_file), venue, camera))
        try:
            return user, path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file: cannot read {path}: {exc.strerror}") from None
    return user, cfg.password()


def _make_client(
    cfg: MqttConfig,
    cid: str,
    protocol: MQTTProtocolVersion,
    venue: str | None = None,
    camera: str | None = None,
) -> mqtt.Client:
    """A paho client with TLS, credentials and reconnect backoff set from `cfg` (not connected)."""
    transport = "websockets" if cfg.url.startswith(("ws://", "wss://")) else "tcp"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=protocol,
        transport=transport,
        clean_session=True if protocol == MQTTProtocolVersion.MQTTv311 else None,
    )
    user, password = credentials(cfg, venue, camera)
    if user:
        client.username_pw_set(user, password)
    if cfg.use_tls:
        tls = cfg.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
            certfile=str(tls.cert_file) if tls and tls.cert_file else None,
            keyfile=str(tls.key_file) if tls and tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if tls and tls.insecure:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.max_queued_messages_set(1000)
    return client


def _code(reason: ReasonCode | int) -> int:
    return reason.value if isinstance(reason, ReasonCode) else int(reason)


def check_reachable(
    cfg: MqttConfig, timeout: float = 5.0, *, venue: str | None = None, camera: str | None = None
) -> None:
    """Connect once (TCP, TLS, MQTT CONNECT) and disconnect; raise `BrokerUnreachable` naming host:port.

    With a per-camera ``username`` template (``{venue}``/``{camera}``) pass the camera to log in as; without
    it only the TCP connection is checked.
    """
    where = f"{cfg.host}:{cfg.port}"
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout):
            pass
    except OSError as exc:
        raise BrokerUnreachable(f"MQTT broker {where} unreachable: {exc.strerror or exc}") from None
    if (is_templated(cfg.username) or is_templated(cfg.password_file)) and (venue is None or camera is None):
        return
    result: dict[str, int] = {}
    done = threading.Event()
    protocols = [_protocol(cfg)] + ([MQTTProtocolVersion.MQTTv311] if cfg.protocol == "auto" else [])
    for protocol in protocols:
        result.clear()
        done.clear()
        cid = f"{cfg.client_id_prefix}-check-{int(time.time() * 1000) % 10**9}"
        client = _make_client(cfg, cid, protocol, venue, camera)
        client.connect_timeout = timeout

        def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            result["rc"] = _code(reason)
            done.set()

        def on_disconnect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            result.setdefault("rc", _code(reason) or -1)
            done.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
            client.loop_start()
            done.wait(timeout)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUnreachable(f"MQTT broker {where}: cannot connect: {exc}") from None
        finally:
            client.disconnect()
            client.loop_stop()
        rc = result.get("rc")
        if rc == 0:
            return
        if rc in _UNSUPPORTED_PROTOCOL and protocol is not protocols[-1]:
            continue
        if rc is None:
            raise BrokerUnreachable(f"MQTT broker {where}: no CONNACK within {timeout:g} s")
        raise BrokerUnreachable(f"MQTT broker {where} refused the connection: {_reason_text(rc)}")


def _reason_text(rc: int) -> str:
    texts = {
        1: "unacceptable protocol version",
        4: "bad user name or password",
        5: "not authorized",
        0x84: "unsupported protocol version",
        0x86: "bad user name or password",
        0x87: "not authorized",
    }
    return texts.get(rc, f"reason code {rc}")


class Publisher:
    """Publishes one camera's occupancy (spooled, in order, QoS 1) and retained status."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        venue: str,
        camera: str,
        state_dir: Path,
        calibration: CountCalibration | None = None,
    ) -> None:
        self.cfg = cfg
        self.venue = venue
        self.camera = camera
        self.client_id = client_id(cfg, venue, camera)
        self.occupancy_topic = contract.occupancy_topic(venue, camera)
        self.status_topic = contract.status_topic(venue, camera)
        self.spool = Spool(spool_path(state_dir, venue, camera), cfg.queue.max_messages, cfg.queue.overflow)
        self._protocol = _protocol(cfg)
        self._state = CameraState.DEGRADED  # "online" once the pipeline has analysed a frame
        self._reason: str | None = "starting"
        self._decode: contract.DecodeStatus | None = None
        self.calibration = calibration  # sent in every status message (last will included); None: absent
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker acknowledged every subscription of this connection
        self._pending_subacks: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._acked: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._fallback = threading.Event()
        self._ever_connected = False
        self._connack_seen = False
        self._sent = 0
        self._rejected = 0
        self.connects = 0
        """Successful connections (the first one and every reconnect)."""
        self._lock = threading.Lock()
        self._client = self._new_client(self._protocol)
        self._sender: threading.Thread | None = None

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect in the background (paho reconnects with backoff); never raises if the broker is down."""
        self._connect(self._client)
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-send-{self.camera}", daemon=True)
        self._sender.start()

    def stop(self, flush_s: float = STOP_FLUSH_S) -> None:
        """Deliver what can be delivered within `flush_s`, publish ``offline`` (graceful), disconnect."""
        deadline = time.monotonic() + flush_s
        while len(self.spool) and self._connected.is_set() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        if self._sender:
            self._sender.join(max(0.5, deadline - time.monotonic()))
        with self._lock:
            self._state, self._reason = CameraState.OFFLINE, "stopped"
        client = self._client
        if self._connected.is_set():
            info = client.publish(self.status_topic, self._status_payload(), qos=contract.QOS, retain=True)
            _wait(info, max(0.5, min(2.0, deadline - time.monotonic())))
        client.disconnect()
        client.loop_stop()
        self.spool.close()

    # --------------------------------------------------------------------------------------- publishing
    def next_seq(self) -> int:
        """Next occupancy ``seq`` of this camera, persisted before it is returned."""
        return self.spool.next_seq()

    def publish_occupancy(self, msg: Occupancy) -> None:
        """Commit the message to the on-disk queue; the sender thread delivers it (in order, QoS 1).

        A message without ``stream`` gets this camera's stream (`Spool.stream`).
        """
        if msg.camera != self.camera or msg.venue != self.venue:
            raise ValueError(f"message for {msg.venue}/{msg.camera} given to publisher of {self.venue}/{self.camera}")
        if msg.stream is None:  # the spool file's stream: a new state file starts a new one (docs/mqtt.md)
            msg = msg.model_copy(update={"stream": self.spool.stream})
        if not self.spool.put(self.occupancy_topic, msg.to_json(), msg.seq):
            log.warning("%s: store-and-forward queue full, dropped seq %d", self.camera, msg.seq)
        self._wake.set()

    def set_status(self, state: CameraState, reason: str | None = None) -> None:
        """Set the retained status (published now if connected, and again on every connect)."""
        with self._lock:
            changed = (state, reason) != (self._state, self._reason)
            self._state, self._reason = CameraState(state), reason
        if changed and self._connected.is_set():
            self._client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)

    def set_decode(self, decode: contract.DecodeStatus | None) -> None:
        """How the camera's video is decoded, sent in every status from now on (re-published when it changes)."""
        with self._lock:
            changed = decode != self._decode
            self._decode = decode
        if changed and self._connected.is_set():
            self._client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)

    def publish_raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish outside the spool (e.g. snapshots): lost if the process dies before the broker has it."""
        self._client.publish(topic, payload, qos=contract.QOS, retain=retain)

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        """Call ``callback(topic, payload)`` for messages on `topic` (re-subscribed on every reconnect)."""
        with self._lock:
            self._subscriptions[topic] = callback
        self._client.message_callback_add(topic, self._dispatch(callback))
        if self._connected.is_set():
            with self._lock:  # _on_subscribe takes the lock: the mid is known before its SUBACK is handled
                self._subscribed.clear()
                self._pending_subacks.add(self._client.subscribe(topic, qos=contract.QOS)[1])

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Connected, and every subscription (commands) acknowledged by the broker: nothing sent to them from
        now on is missed."""
        return self._subscribed.wait(timeout)

    @property
    def protocol(self) -> str:
        """The MQTT version in use: ``"5"`` or ``"3.1.1"``."""
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(queued=len(self.spool), sent=self._sent, dropped=self.spool.dropped + self._rejected)

    # ------------------------------------------------------------------------------------------ internals
    def _status_payload(self, state: CameraState | None = None, reason: str | None = None) -> bytes:
        """Status JSON for `state` (default: the current state and reason)."""
        if state is None:
            with self._lock:
                state, reason = self._state, self._reason
        return Status(
            venue=self.venue,
            camera=self.camera,
            state=state,
            ts=contract.utcnow(),
            reason=reason,
            calibration=self.calibration,
            decode=self._decode if state != CameraState.OFFLINE else None,
        ).to_json()

    def _will_payload(self) -> bytes:
        return self._status_payload(CameraState.OFFLINE, "connection lost (last will)")

    def _new_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        client = _make_client(self.cfg, self.client_id, protocol, self.venue, self.camera)
        client.will_set(self.status_topic, self._will_payload(), qos=contract.QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        for topic, callback in subscriptions:
            client.message_callback_add(topic, self._dispatch(callback))
        return client

    def _connect(self, client: mqtt.Client) -> None:
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        client.loop_start()

    def _dispatch(self, callback: Callable[[str, bytes], None]) -> Callable[[Any, Any, mqtt.MQTTMessage], None]:
        def on_message(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
            try:
                callback(message.topic, message.payload)
            except Exception:
                log.exception("%s: handler for %s failed", self.camera, message.topic)

        return on_message

    def _may_fall_back(self) -> bool:
        return (
            self.cfg.protocol == "auto"
            and self._protocol == MQTTProtocolVersion.MQTTv5
            and not self._ever_connected
            and not self._stopping.is_set()
        )

    def _request_fallback(self, why: str) -> None:
        log.warning("%s: broker %s to an MQTT v5 CONNECT; falling back to 3.1.1", self.camera, why)
        self._fallback.set()
        self._wake.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        rc = _code(reason)
        self._connack_seen = True
        if rc != 0:
            if rc in _UNSUPPORTED_PROTOCOL and self._may_fall_back():
                self._request_fallback(f"answered {_reason_text(rc)!r}")
            else:
                log.error(
                    "%s: broker %s:%d refused: %s",
                    self.camera,
                    self.cfg.host,
                    self.cfg.port,
                    _reason_text(rc),
                )
            return
        self._ever_connected = True
        self.connects += 1
        log.info("%s: connected to %s:%d (MQTT %s)", self.camera, self.cfg.host, self.cfg.port, self.protocol)
        # The will of the next connection carries a fresh timestamp.
        client.will_set(self.status_topic, self._will_payload(), qos=contract.QOS, retain=True)
        # connected first: a set_status() racing with this callback then publishes its own update too
        self._connected.set()
        client.publish(self.status_topic, self._status_payload(), qos=contract.QOS, retain=True)
        with self._lock:
            topics = list(self._subscriptions)
            self._pending_subacks = {client.subscribe(topic, qos=contract.QOS)[1] for topic in topics}
            if not self._pending_subacks:
                self._subscribed.set()
        self._wake.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _reasons: Any, _p: Any) -> None:
        with self._lock:
            self._pending_subacks.discard(mid)
            if not self._pending_subacks and self._connected.is_set():
                self._subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning("%s: disconnected from broker (%s); queueing on disk", self.camera, reason)
        elif not self._connack_seen and self._may_fall_back():
            # A 3.1.1-only broker may close the connection without any CONNACK.
            self._request_fallback("closed the connection without CONNACK")
        self._connack_seen = False
        self._connected.clear()
        self._subscribed.clear()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        # Runs under paho's lock: only hand the news to the sender thread.
        self._acked.put((mid, _code(reason) >= 0x80))
        self._wake.set()

    def _send_loop(self) -> None:
        """Hand spooled messages to paho in order; delete each once its PUBACK arrived."""
        inflight: deque[tuple[int, int]] = deque()  # (spool id, mid), oldest first
        done: dict[int, bool] = {}  # mid -> refused by the broker
        last_id = 0
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                last_id = self._send_step(inflight, done, last_id)
            except Exception:  # disk full, locked database ...: keep the sender alive and retry
                log.exception("%s: sending from the store-and-forward queue failed; retrying", self.camera)
                self._stopping.wait(1.0)

    def _send_step(self, inflight: deque[tuple[int, int]], done: dict[int, bool], last_id: int) -> int:
        """One round of the sender: collect PUBACKs, free acknowledged messages, hand out new ones.

        Returns the spool id of the last message handed to paho (0 after a protocol fall-back).
        """
        if self._fallback.is_set():
            self._fall_back()
            inflight.clear()
            return 0
        while True:
            try:
                mid, refused = self._acked.get_nowait()
            except queue.Empty:
                break
            done[mid] = refused
        acked: list[int] = []
        while inflight and inflight[0][1] in done:
            spool_id, mid = inflight.popleft()
            if done.pop(mid):
                self._rejected += 1
                log.error("%s: broker refused occupancy message (not authorized?); dropped", self.camera)
            else:
                self._sent += 1
            acked.append(spool_id)
        # mids that are not ours (status, snapshots) are forgotten
        ours = {m for _, m in inflight}
        for mid in [m for m in done if m not in ours]:
            del done[mid]
        self.spool.ack(*acked)
        if not self._connected.is_set() or len(inflight) >= WINDOW:
            return last_id
        for item in self.spool.peek(WINDOW - len(inflight), after_id=last_id):
            info = self._client.publish(item.topic, item.payload, qos=contract.QOS)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            inflight.append((item.id, info.mid))
            last_id = item.id
        return last_id

    def _fall_back(self) -> None:
        """Replace the v5 client by a 3.1.1 one (broker refused v5 on the first connection)."""
        self._fallback.clear()
        old = self._client
        old.loop_stop()
        self._protocol = MQTTProtocolVersion.MQTTv311
        self._client = self._new_client(self._protocol)
        self._connect(self._client)


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if info.is_published():
                return
        except (RuntimeError, ValueError):
            return
        time.sleep(0.02)
