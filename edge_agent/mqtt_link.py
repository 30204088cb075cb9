"""The device's MQTT v5 link: drains the outbox to the broker, QoS 1, deleting on PUBACK.

Messages leave the outbox only when the broker acknowledges them; after a disconnect every
unacknowledged message is sent again (the server de-duplicates by device and sequence number).
On connect the link publishes the retained birth status and subscribes to the device's own
topics; the broker publishes the retained last will if the device vanishes. A clean `stop`
publishes the offline status itself. Paho's network thread reconnects with backoff.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.exceptions import AgentError
from edge_agent.outbox import Outbox
from fleet_protocol.messages import StatusReason
from fleet_protocol.topics import MessageKind, device_subscriptions, device_topic

log = logging.getLogger(__name__)

StatusFactory = Callable[[StatusReason], bytes]
"""Builds an encoded status message for a reason: connected, shutdown, connection_lost."""


class LinkError(AgentError):
    """The MQTT link is misconfigured or cannot reach the broker in time."""


@dataclass(frozen=True)
class LinkSettings:
    """Where and how to connect."""

    url: str
    device_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    inflight: int = 64
    reconnect_max_s: int = 30


@dataclass
class LinkStats:
    """Counters of the link since it started (read by `simulate`'s summary; no message
    carries them)."""

    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    connects: int = 0
    disconnects: int = 0


class MqttLink:
    """Publishes the outbox to the broker and hands server messages to `on_message`."""

    def __init__(
        self,
        settings: LinkSettings,
        outbox: Outbox,
        status: StatusFactory,
        *,
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in {"mqtt", "mqtts", "ws", "wss"} or not parts.hostname:
            raise LinkError(f"not an MQTT broker URL: {settings.url!r}")
        self.settings = settings
        self.outbox = outbox
        self.stats = LinkStats()
        self._status = status
        self._on_message = on_message
        self._host = parts.hostname
        secure = parts.scheme in {"mqtts", "wss"}
        default_port = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}[parts.scheme]
        self._port = parts.port or default_port
        transport: Literal["tcp", "websockets"] = (
            "websockets" if parts.scheme in {"ws", "wss"} else "tcp"
        )
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.device_id,
            protocol=mqtt.MQTTv5,
            transport=transport,
        )
        if settings.username or settings.password:
            self._client.username_pw_set(settings.username or settings.device_id, settings.password)
        if secure:
            self._client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_s)
        self._client.max_inflight_messages_set(settings.inflight)
        self._client.on_connect = self._connected
        self._client.on_connect_fail = self._connect_failed
        self._client.on_disconnect = self._disconnected
        self._client.on_publish = self._published
        self._client.on_message = self._received
        self._status_topic = device_topic(settings.device_id, MessageKind.STATUS)
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # paho message id -> outbox row id
        self._early: dict[int, ReasonCode] = {}  # acks that beat their bookkeeping
        self._status_mids: set[int] = set()  # status messages: not from the outbox
        self._last_sent = 0
        self._generation = 0  # connections so far: bookkeeping of an older one is void
        self._connected_event = threading.Event()
        self._wake = threading.Event()
        self._running = False
        self._drainer: threading.Thread | None = None
        self._set_will()

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the last connection and it is still up."""
        return self._connected_event.is_set()

    def _set_will(self) -> None:
        # A fresh will each connection: a reused one would repeat its sequence number.
        self._client.will_set(
            self._status_topic, self._status("connection_lost"), qos=1, retain=True
        )

    def start(self) -> None:
        """Connect in the background and start draining the outbox."""
        self._running = True
        self._client.connect_async(
            self._host, self._port, keepalive=self.settings.keepalive_s, clean_start=True
        )
        self._client.loop_start()
        self._drainer = threading.Thread(target=self._drain, name="outbox-drain", daemon=True)
        self._drainer.start()

    def notify(self) -> None:
        """Wake the drainer: something new is in the outbox."""
        self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or `timeout` seconds pass."""
        return self._connected_event.wait(timeout)

    def wait_drained(self, timeout: float) -> bool:
        """Block until the outbox is empty (everything acknowledged) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.depth == 0

    def stop(self, *, timeout: float = 5.0) -> None:
        """Flush what the broker will take within `timeout`, say offline, disconnect."""
        self.wait_drained(timeout)
        self._running = False
        self._wake.set()
        if self.connected:
            info = self._publish_status("shutdown")
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as e:
                log.warning("offline status not confirmed: %s", e)
        self._client.disconnect()
        self._client.loop_stop()
        if self._drainer is not None:
            self._drainer.join(timeout)

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.stats.connects += 1
        with self._lock:
            self._inflight.clear()
            self._early.clear()
            self._status_mids.clear()
            self._last_sent = 0  # resend everything not yet acknowledged
            self._generation += 1
        self._publish_status("connected")
        for topic in device_subscriptions(self.settings.device_id):
            client.subscribe(topic, qos=1)
        self._connected_event.set()
        self._wake.set()

    def _connect_failed(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` and retries with backoff, saying nothing:
        # the error being handled is the reason (a broker certificate the CA file does not
        # vouch for, a refused port), and the only clue a device's operator gets.
        reason = str(sys.exc_info()[1])  # the text only: a kept exception keeps paho's socket
        log.warning("cannot connect to the broker at %s: %s", self.settings.url, reason)

    def _publish_status(self, reason: StatusReason) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(self._status_topic, self._status(reason), qos=1, retain=True)
        with self._lock:
            if self._early.pop(info.mid, None) is None:  # else its PUBACK already came
                self._status_mids.add(info.mid)
        return info

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.stats.disconnects += 1
        self._connected_event.clear()
        self._set_will()

    def _published(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            if mid in self._status_mids:
                self._status_mids.discard(mid)
                return
            row = self._inflight.pop(mid, None)
            if row is None:
                self._early[mid] = reason
                return
        self._settle(row, reason)

    def _settle(self, row: int, reason: ReasonCode) -> None:
        if reason.is_failure:
            # The broker refused it (e.g. not authorised): resending cannot help.
            self.stats.rejected += 1
            log.error("broker refused outbox message %d: %s", row, reason)
        else:
            self.stats.acknowledged += 1
        self.outbox.ack([row])

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            try:
                self._on_message(message.topic, bytes(message.payload))
            except Exception:  # a bad server message must never kill the link's thread
                log.exception("handling a message on %s failed", message.topic)

    def _drain(self) -> None:
        while self._running:
            if not self._connected_event.wait(0.5):
                continue
            with self._lock:
                room = self.settings.inflight - len(self._inflight)
                after = self._last_sent
                generation = self._generation
            batch = self.outbox.pending(room, after=after) if room > 0 else []
            if not batch:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            for message in batch:
                if not self._connected_event.is_set():
                    break
                # Never call paho under our lock: its network thread holds paho's locks while
                # it runs `_published`, which takes ours.
                info = self._client.publish(
                    message.topic, message.payload, qos=message.qos, retain=message.retain
                )
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # disconnected meanwhile: the reconnect resends from the start
                with self._lock:
                    if self._generation != generation:
                        break  # reconnected meanwhile: its mids mean nothing now; resent anyway
                    self._last_sent = message.id
                    self.stats.sent += 1
                    early = self._early.pop(info.mid, None)
                    if early is None:
                        self._inflight[info.mid] = message.id
                if early is not None:
                    self._settle(message.id, early)
