"""OTA nudges: OtaCommand messages to devices' ``ota/command`` topics.

A nudge carries no authority (the device installs only what its signed assignment names); it
only makes the device refresh now rather than at its next poll, so a lost one costs time, not
safety, and the rollout engine nudges again while an install is pending.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_protocol.codec import encode
from fleet_protocol.messages import OtaAction, OtaCommand
from fleet_protocol.topics import KIND_SPECS, MessageKind, device_topic
from fleet_server.exceptions import MqttSetupError
from fleet_server.models import utcnow
from fleet_server.mqtt import configure_server_client
from fleet_server.settings import BrokerSettings

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000


class NudgePublisher(Protocol):
    """Where the driver sends OtaCommands."""

    def publish(self, command: OtaCommand) -> None:
        """Send `command` to its device (best effort: a lost nudge is repeated later)."""


class _SeqCounter:
    """The server's seq for commands: microseconds since the epoch, strictly growing, so a
    device that keeps the highest seq it saw never takes a new command for a redelivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


_SEQ = _SeqCounter()


def commands(
    *,
    rollout_id: str | None,
    action: OtaAction,
    model_version: str,
    target_path: str,
    device_ids: Iterable[str],
) -> list[OtaCommand]:
    """One OtaCommand per device."""
    now = utcnow()
    return [
        OtaCommand(
            device_id=device_id,
            seq=_SEQ.next(),
            timestamp=now,
            command_id=uuid.uuid4(),
            action=action,
            model_version=model_version,
            target_path=target_path,
            rollout_id=rollout_id,
        )
        for device_id in device_ids
    ]


class MqttNudgePublisher:
    """A paho client of the server's broker account that publishes OtaCommands (QoS of the
    topic table); it reconnects by itself, and paho queues QoS 1 messages while it is away."""

    def __init__(self, settings: BrokerSettings, client_id: str) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{client_id}-{socket.gethostname()}"[:64],
            protocol=mqtt.MQTTv5,
        )
        # Nudges wait in memory while the broker is away; past this many, new ones are dropped
        # (the engine nudges again).
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._address = configure_server_client(self._client, settings)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: object, *args: object) -> None:
        reason = args[1] if len(args) > 1 else None
        if getattr(reason, "is_failure", False):
            log.warning("nudge publisher: the broker refused the connection: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, *args: object) -> None:
        self._connected.clear()

    def start(self) -> MqttNudgePublisher:
        """Connect in the background."""
        try:
            self._client.connect_async(self._address.host, self._address.port)
        except (OSError, ValueError) as e:
            raise MqttSetupError(f"nudge publisher cannot connect: {e}") from e
        self._client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Whether it is connected within `timeout` seconds."""
        return self._connected.wait(timeout)

    def publish(self, command: OtaCommand) -> None:
        """Publish `command` on its device's ota/command topic."""
        spec = KIND_SPECS[MessageKind.OTA_COMMAND]
        topic = device_topic(command.device_id, MessageKind.OTA_COMMAND)
        info = self._client.publish(topic, encode(command), qos=spec.qos, retain=spec.retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("nudge to %s not sent: %s", command.device_id, mqtt.error_string(info.rc))

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
