"""A paho client that reads its socket in large chunks, for the ingest worker's message rate.

paho reads a packet with three `recv` calls (the command byte, the length bytes one by one,
then the body) and handles, per `select`, only as many packets as it has messages of its own
in flight: usually one. At thousands of readings a second that was a fifth of the ingest
worker's time in system calls. This client reads up to 64 KiB per `recv`, serves paho's small
reads from that buffer, and handles every packet already read before going back to `select`
(which cannot see bytes that already left the socket).

It overrides paho's `_sock_recv` and `loop_read`, so paho is pinned to a minor version
(`paho-mqtt~=2.2.0`); tests/fleet_server/test_ingest_mqtt_client.py checks it against a broker.

`configure_client` is how the worker and ``tail`` apply the broker settings
(`fleet_server.mqtt` reads them).
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from fleet_server.exceptions import IngestError, MqttSetupError
from fleet_server.mqtt import BrokerAddress, configure_server_client
from fleet_server.settings import BrokerSettings

READ_SIZE = 65536


def configure_client(client: mqtt.Client, settings: BrokerSettings) -> BrokerAddress:
    """Give `client` the server's broker credentials (and TLS); return where to connect.

    Raises `IngestError` for a broker URL or CA file it cannot use.
    """
    try:
        return configure_server_client(client, settings)
    except MqttSetupError as e:
        raise IngestError(str(e)) from e


class BufferedReadClient(mqtt.Client):
    """`paho.mqtt.client.Client` with buffered socket reads; use it as paho's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_position = 0
        self._read_socket: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._read_socket:  # a new connection: the old bytes are void
            self._read_socket = self._sock
            self._read_buffer, self._read_position = b"", 0
        if self._read_position >= len(self._read_buffer):
            data = super()._sock_recv(READ_SIZE)  # raises as paho expects when nothing is there
            if not data:
                return data  # end of stream: paho's connection-lost path
            self._read_buffer, self._read_position = data, 0
        start = self._read_position
        self._read_position = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start : self._read_position]

    @property
    def buffered_bytes(self) -> int:
        """Bytes read from the socket that paho has not handled yet."""
        if self._sock is not self._read_socket:
            return 0
        return len(self._read_buffer) - self._read_position

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle what the socket has, then every packet still in the buffer."""
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self.buffered_bytes:
            rc = super().loop_read(max_packets)
        return rc
