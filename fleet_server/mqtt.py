"""How every server-side MQTT client reads the broker settings: one address, one TLS set-up.

The ingest worker, ``roadsign-fleet tail``, the rollout driver's nudge publisher and the
dynamic-security admin client all connect to ``broker.url``; reading it in one place keeps them
agreeing on ports (``mqtts://`` without a port is 8883) and on how a CA file is loaded. Errors
are `MqttSetupError`; each caller says which client it was setting up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fleet_server.exceptions import MqttSetupError

if TYPE_CHECKING:  # the settings validate URLs with `broker_address`: no paho for that
    import paho.mqtt.client as mqtt

    from fleet_server.settings import BrokerSettings

MQTT_PORT = 1883
MQTTS_PORT = 8883


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker URL points: host, port, and whether the connection is TLS."""

    host: str
    port: int
    tls: bool


def broker_address(url: str) -> BrokerAddress:
    """The address of an ``mqtt://`` or ``mqtts://`` URL; the port defaults by scheme."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (MQTTS_PORT if tls else MQTT_PORT)
    except ValueError as e:  # a port that is not a number, or out of range
        raise MqttSetupError(f"broker url {url!r}: {e}") from e
    return BrokerAddress(host=parts.hostname or "127.0.0.1", port=port, tls=tls)


def set_tls(client: mqtt.Client, ca_file: Path | None) -> None:
    """Make `client` speak TLS, trusting `ca_file` (None: the system's CAs)."""
    try:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    except (OSError, ValueError) as e:  # missing or unreadable (OSError), not PEM (ssl.SSLError)
        raise MqttSetupError(f"cannot set up TLS to the broker with {ca_file}: {e}") from e


def configure_server_client(client: mqtt.Client, settings: BrokerSettings) -> BrokerAddress:
    """Give `client` the server's broker credentials (and TLS); return where to connect.

    Raises `MqttSetupError` for a broker URL or CA file it cannot use.
    """
    address = broker_address(settings.url)
    client.username_pw_set(settings.username, settings.password.get_secret_value())
    if address.tls:
        set_tls(client, settings.ca_file)
    return address
