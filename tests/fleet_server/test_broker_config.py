"""``roadsign-fleet broker-config``: the Mosquitto it writes starts closed, limited, and on TLS.

Each broker here runs on the files the command wrote, so what is checked is what ships; the TLS
one serves certificates from `tests.tls.make_pki`, and the server's own ingest worker is the
client that must get in.
"""

from __future__ import annotations

import getpass
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fleet_protocol.codec import MAX_PAYLOAD_BYTES
from fleet_protocol.config_files import load_config
from fleet_protocol.topics import FLEET_READINGS_TOPIC
from fleet_server.cli import main
from fleet_server.db import make_engine
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.fleet_server.broker_support import (
    BROKER_ADMIN_PASSWORD,
    SERVER_PASSWORD,
    connect,
    disconnect,
    publish,
)
from tests.fleet_server.test_settings import PROD_ENV
from tests.mosquitto import Broker, free_port
from tests.tls import Pki
from tests.waiting import wait_until

STRONG_ADMIN_PASSWORD = "a-4Rt8qZ0xWm2LkV7nB3cY9sDf6HjP1uE5"


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


def _plaintext_outcome(port: int) -> str:
    """What a plaintext MQTT client gets from 127.0.0.1:`port`: "connected" or "dropped"."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    client.username_pw_set("fleet-server", SERVER_PASSWORD)
    client.reconnect_delay_set(60, 60)  # one attempt is the answer
    outcome: list[str] = []
    client.on_connect = lambda *args: outcome.append("connected")
    client.on_disconnect = lambda *args: outcome.append("dropped")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return wait_until(lambda: outcome[:1], 10, "a CONNACK or a hang-up")[0]
    finally:
        disconnect(client)


def test_a_tls_listener_lets_the_server_in_over_tls_and_no_plaintext_client(
    database: DatabaseSettings, tmp_path: Path, pki: Pki
) -> None:
    port = free_port()
    broker_settings = {"url": f"mqtts://127.0.0.1:{port}", "ca_file": str(pki.ca)}
    config = _fleet_yaml(tmp_path / "fleet.yaml", database, broker_settings)
    out = tmp_path / "broker"
    tls = ["--certfile", str(pki.server_cert), "--keyfile", str(pki.server_key)]
    assert main(_broker_config(config, out, port, *tls)) == 0
    broker = Broker(out, config=out / "mosquitto.conf", port=port).start()
    settings = load_config(ServerSettings, config)
    engine = make_engine(settings.database)
    worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ingest-tls")
    try:
        worker.start()
        assert worker.wait_ready(10), "the server's worker could not connect over TLS"
        assert _plaintext_outcome(port) == "dropped"
    finally:
        worker.stop()
        engine.dispose()
        broker.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "production mode refused: the broker would listen in plaintext MQTT"),
        (["--certfile", "{cert}"], "--certfile and --keyfile come together"),
        (["--certfile", "{cert}", "--keyfile", "{missing}"], "--keyfile {missing}: no such file"),
    ],
    ids=["plaintext-in-production", "certificate-without-key", "missing-key"],
)
def test_a_listener_production_or_mosquitto_would_refuse_is_refused_naming_the_option(
    options: list[str],
    message: str,
    database: DatabaseSettings,
    tmp_path: Path,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        **PROD_ENV,
        "ROADSIGN_FLEET__DATABASE__URL": database.url,  # a refusal too late would read it
        "ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH": "dynamic_security",
        "ROADSIGN_FLEET__ENROLMENT__BROKER_ADMIN_PASSWORD": STRONG_ADMIN_PASSWORD,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    files = {"cert": str(pki.server_cert), "missing": str(tmp_path / "missing.key")}
    out = tmp_path / "broker"
    argv = ["broker-config", "--out", str(out), "--listen", "0.0.0.0:8883"]
    assert main(argv + [option.format(**files) for option in options]) == 1
    assert message.format(**files) in capsys.readouterr().err
    assert not (out / "mosquitto.conf").exists()
