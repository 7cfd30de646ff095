"""MQTT connection of the server: ingest of occupancy/status, publishing alerts and commands.

``app.state.mqtt`` is an `MqttBridge`: ``publish(topic, payload, qos=1, retain=False)`` and
``subscribe(filter, callback)`` (callback(topic, payload_bytes)) for other parts of the server
(calibration snapshots and layout results). Occupancy uses an MQTT v5 shared subscription
(``$share/<group>/...``) when ``mqtt_shared_group`` is set, so several processes split the load.

Delivery: the server always holds a persistent session (client id `Settings.mqtt_session_id`, stable across
restarts; MQTT 5 clean start off with a session expiry of ``mqtt_session_expiry_s``, MQTT 3.1.1 clean
session off) and subscribes with QoS 1, so occupancy the broker acknowledged to an edge while the server was
away or restarting is queued by the broker and delivered when it is back (docs/mqtt.md, "Delivery").
Retained occupancy is never applied (occupancy is never retained by an edge; a retained copy would be
re-applied after every restart): it is counted as ``retained_occupancy``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from server.settings import Settings
from turnout.contract import OCCUPANCY_FILTER, PREFIX, QOS, STATUS_FILTER

if TYPE_CHECKING:  # the bridge only needs handle(), set_link() and counters
    from server.live import LiveHub

log = logging.getLogger(__name__)
_SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code
MessageCallback = Callable[[str, bytes], None]


class MqttBridge:
    """One paho client (MQTT v5) on its own network thread."""

    def __init__(self, settings: Settings, hub: LiveHub | None) -> None:
        self.settings = settings
        self.hub = hub
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        """Set when the broker has acknowledged this connection's subscriptions (cleared on disconnect)."""
        self._subscribe_mid: int | None = None
        self._extra: list[tuple[str, MessageCallback]] = []
        self._lock = threading.Lock()
        # Several processes of one shared group need one stable id each (a derived one would be the same for
        # all of them on one host); without it they fall back to plain sessions, so that no orphaned session
        # keeps a share of the group's messages after a restart.
        self.persistent = settings.mqtt_client_id is not None or settings.mqtt_shared_group is None
        if self.persistent:
            self.client_id = settings.mqtt_session_id
        else:
            self.client_id = f"turnout-server-{uuid.uuid4().hex[:8]}"
            log.warning(
                "mqtt_shared_group without mqtt_client_id: no persistent MQTT session (messages sent while this "
                "process is away go to the other members only); set TURNOUT_MQTT_CLIENT_ID per process"
            )
        self._v311 = settings.mqtt_protocol == "3.1.1"  # e.g. the demo's embedded amqtt broker
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311 if self._v311 else mqtt.MQTTv5,
            reconnect_on_failure=True,
            **({"clean_session": not self.persistent} if self._v311 else {}),
        )
        if settings.mqtt_username:
            pw = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            self.client.username_pw_set(settings.mqtt_username, pw)
        if settings.mqtt_tls:
            self.client.tls_set(
                ca_certs=str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None,
                certfile=str(settings.mqtt_tls_cert) if settings.mqtt_tls_cert else None,
                keyfile=str(settings.mqtt_tls_key) if settings.mqtt_tls_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.5, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self.hub is not None:
            self.hub.set_link(False)
        if self._v311:
            host, port, keepalive = self.settings.mqtt_host, self.settings.mqtt_port, self.settings.mqtt_keepalive_s
            self.client.connect_async(host, port, keepalive=keepalive)
            self.client.loop_start()
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.mqtt_session_expiry_s if self.persistent else 0
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=self.settings.mqtt_keepalive_s,
            clean_start=not self.persistent,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Connected and the subscriptions acknowledged: from now on nothing published is missed."""
        return self.subscribed.wait(timeout)

    # ------------------------------------------------------------------------------- API
    def publish(self, topic: str, payload: bytes | str, qos: int = QOS, retain: bool = False) -> Any:
        """Publish (queued while disconnected by paho up to its limits); returns paho's MQTTMessageInfo."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, callback: MessageCallback) -> None:
        """Call ``callback(topic, payload)`` for messages matching ``topic_filter`` (kept over reconnects)."""
        with self._lock:
            self._extra.append((topic_filter, callback))
        if self.connected.is_set():
            self.client.subscribe(topic_filter, qos=QOS)

    # ------------------------------------------------------------------------- callbacks
    def _filters(self) -> list[str]:
        venues = self.settings.mqtt_venues
        occ = [f"{PREFIX}/{v}/+/occupancy" for v in venues] if venues else [OCCUPANCY_FILTER]
        status = [f"{PREFIX}/{v}/+/status" for v in venues] if venues else [STATUS_FILTER]
        if self.settings.mqtt_shared_group:
            occ = [f"$share/{self.settings.mqtt_shared_group}/{f}" for f in occ]
        return occ + status

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s refused: %s", self.settings.mqtt_url, reason)
            return
        subs = [(f, QOS) for f in self._filters()]
        with self._lock:
            subs += [(f, QOS) for f, _ in self._extra]
        if self.hub is not None or subs:
            self._subscribe_mid = client.subscribe(subs)[1]
        else:
            self.subscribed.set()
        self.connected.set()
        if self.hub is not None:
            self.hub.set_link(True)
        log.info("MQTT connected to %s as %s", self.settings.mqtt_url, self.client_id)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid == self._subscribe_mid:
            refused = [r for r in reasons if getattr(r, "is_failure", False)]
            if refused:
                log.warning("MQTT subscriptions refused by the broker: %s", ", ".join(map(str, refused)))
            self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if self.hub is not None:
            self.hub.set_link(False)
        if reason.is_failure:
            if getattr(reason, "value", None) == _SESSION_TAKEN_OVER:
                log.error(
                    "MQTT session %s taken over by another connection with the same client id: give each server "
                    "process its own TURNOUT_MQTT_CLIENT_ID (and, with deploy/mosquitto, its own broker user)",
                    self.client_id,
                )
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        try:
            if self.hub is not None and msg.retain and topic.endswith("/occupancy"):
                # occupancy is never retained: a retained copy would be applied again after every restart
                self.hub.counters["retained_occupancy"] += 1
                return
            if self.hub is not None and (topic.endswith("/occupancy") or topic.endswith("/status")):
                self.hub.handle(topic, msg.payload)
                return
            with self._lock:
                extra = list(self._extra)
            for topic_filter, callback in extra:
                if mqtt.topic_matches_sub(topic_filter, topic):
                    callback(topic, msg.payload)
        except Exception:  # never let one message kill the network thread
            log.exception("error handling MQTT message on %s", topic)
