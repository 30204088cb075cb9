"""``roadsign-fleet broker-config``: the Mosquitto it writes starts closed and limited.

Each broker here runs on the files the command wrote, so what is checked is what ships.
"""

from __future__ import annotations

import getpass
import threading
from pathlib import Path

import pytest
import yaml

from fleet_protocol.codec import MAX_PAYLOAD_BYTES
from fleet_protocol.topics import FLEET_READINGS_TOPIC
from fleet_server.cli import main
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.broker_support import (
    BROKER_ADMIN_PASSWORD,
    SERVER_PASSWORD,
    connect,
    disconnect,
    publish,
)
from tests.mosquitto import Broker, free_port


def _fleet_yaml(path: Path, database: DatabaseSettings, broker: dict[str, str]) -> Path:
    """A settings file on `database` whose broker accounts the dynamic-security plugin keeps."""
    enrolment = {"broker_auth": "dynamic_security", "broker_admin_password": BROKER_ADMIN_PASSWORD}
    settings = {
        "database": {"url": database.url},
        "broker": {"password": SERVER_PASSWORD, **broker},
        "enrolment": enrolment,
        "ingest": {"metrics_port": 0},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def _broker_config(config: Path, out: Path, port: int, *options: str) -> list[str]:
    argv = ["broker-config", "--config", str(config), "--out", str(out)]
    return [*argv, "--listen", f"127.0.0.1:{port}", "--user", getpass.getuser(), *options]


def test_broker_config_command_writes_a_closed_broker_with_a_packet_limit(
    database: DatabaseSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = _fleet_yaml(tmp_path / "fleet.yaml", database, {"url": f"mqtt://127.0.0.1:{port}"})
    out = tmp_path / "broker"
    argv = _broker_config(config, out, port)
    assert main(argv) == 0
    assert "for 0 devices" in capsys.readouterr().out
    assert main(argv) == 1  # the broker's live accounts are not overwritten by accident
    assert "pass --force" in capsys.readouterr().err
    broker = Broker(out, config=out / "mosquitto.conf", port=port).start()
    try:
        _, anonymous = connect(broker, "nobody", None)
        assert anonymous.is_failure
        server, reason = connect(broker, "fleet-server", SERVER_PASSWORD)
        assert not reason.is_failure
        dropped = threading.Event()
        server.on_disconnect = lambda *args: dropped.set()
        fits = publish(server, FLEET_READINGS_TOPIC, b"x" * MAX_PAYLOAD_BYTES)
        assert not fits.is_failure
        server.publish(FLEET_READINGS_TOPIC, b"x" * (MAX_PAYLOAD_BYTES + 8192), qos=1)
        assert dropped.wait(10), "the broker took a packet over its maximum"
        disconnect(server)
    finally:
        broker.stop()
