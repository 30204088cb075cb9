"""One reading of the broker URL for every server-side client: ``mqtts://`` without a port is 8883.

The worker and ``roadsign-fleet tail`` are each pointed at ``mqtts://`` on a loopback address
where only this test listens on 8883 (and nothing on 1883): the connection must arrive there. A
URL or CA file a client cannot use is refused with its own error, naming what is wrong.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet_protocol.config_files import InvalidConfigError, load_config
from fleet_server.cli import main
from fleet_server.db import make_engine
from fleet_server.exceptions import BrokerAuthError, IngestError, MqttSetupError
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.mqtt import BrokerAddress, broker_address
from fleet_server.services.broker_auth.dynamic_security import DynamicSecurityAuth
from fleet_server.settings import (
    ENV_PREFIX,
    BrokerSettings,
    DatabaseSettings,
    IngestSettings,
    ServerSettings,
)

HOST = "127.0.0.77"  # a loopback address of its own: the machine's broker listens on 127.0.0.1
# paho leaves the socket of a failed TLS handshake unclosed (Client._ssl_wrap_socket), and the
# listener below fails every handshake on purpose.
PAHO_LEAKS_FAILED_TLS_SOCKETS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker.example", BrokerAddress("broker.example", 1883, tls=False)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("mqtts://broker.example:9443", BrokerAddress("broker.example", 9443, tls=True)),
        ("mqtt://[::1]:1884", BrokerAddress("::1", 1884, tls=False)),
        ("mqtt://", BrokerAddress("127.0.0.1", 1883, tls=False)),
    ],
)
def test_a_broker_url_gives_host_port_and_tls(url: str, address: BrokerAddress) -> None:
    assert broker_address(url) == address


def _settings(broker: BrokerSettings) -> ServerSettings:
    return ServerSettings(
        database=DatabaseSettings(url="sqlite://"),
        broker=broker,
        ingest=IngestSettings(metrics_port=0),
    )


def _worker(settings: ServerSettings) -> IngestWorker:
    return IngestWorker(settings, make_engine(settings.database), IngestMetrics(), client_id="w")


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("broker.url", "mqtt://broker:99999"),
        ("broker.url", "mqtts://broker:x"),
        ("broker.url", "mqtt://:1883"),
        ("enrolment.broker_public_url", "mqtts://broker:70000"),
    ],
)
def test_settings_refuse_a_broker_url_no_client_could_use_naming_the_field(
    field: str, url: str
) -> None:
    section, name = field.split(".")
    variable = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
    with pytest.raises(InvalidConfigError, match=rf"{re.escape(field)}: .*broker url"):
        load_config(ServerSettings, None, env={variable: url}, env_prefix=ENV_PREFIX)


def test_a_broker_url_with_a_bad_port_is_refused_naming_it_by_every_client() -> None:
    with pytest.raises(MqttSetupError, match="mqtt://broker:99999"):
        broker_address("mqtt://broker:99999")
    # Settings refuse such a URL (above); the clients hold too where one slips past them.
    settings = _settings(BrokerSettings.model_construct(url="mqtt://broker:99999"))
    with pytest.raises(IngestError, match="mqtt://broker:99999"):
        _worker(settings)
    with pytest.raises(BrokerAuthError, match="admin client: broker url 'mqtt://broker:99999'"):
        DynamicSecurityAuth.from_settings(settings)


@pytest.fixture(params=["missing", "not-pem"])
def bad_ca_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A CA file that does not exist, or one that holds no certificate."""
    path = tmp_path / "ca.pem"
    if request.param == "not-pem":
        path.write_text("not a certificate\n")
    return path


def test_a_ca_file_the_server_clients_cannot_load_is_refused_naming_it(bad_ca_file: Path) -> None:
    settings = _settings(BrokerSettings(url=f"mqtts://{HOST}", ca_file=bad_ca_file))
    with pytest.raises(IngestError, match=f"cannot set up TLS to the broker with {bad_ca_file}"):
        _worker(settings)
    with pytest.raises(BrokerAuthError, match=f"TLS to the broker with {bad_ca_file}"):
        DynamicSecurityAuth.from_settings(settings)


def test_tail_with_a_ca_file_it_cannot_load_exits_1_naming_it(
    bad_ca_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.yaml"
    broker = {"url": f"mqtts://{HOST}", "ca_file": str(bad_ca_file)}
    config.write_text(yaml.safe_dump({"broker": broker}))
    assert main(["tail", "--config", str(config), "--timeout", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("roadsign-fleet tail: cannot set up TLS to the broker with ")
    assert str(bad_ca_file) in error


@pytest.fixture
def mqtts_listener() -> Iterator[threading.Event]:
    """A TCP listener on HOST:8883 that hangs up on whoever connects; set once someone did."""
    server = socket.socket()
    try:
        server.bind((HOST, 8883))
    except OSError as e:
        server.close()
        pytest.skip(f"cannot listen on {HOST}:8883: {e}")
    server.listen()
    server.settimeout(0.2)
    reached, closing = threading.Event(), threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.close()
            reached.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield reached
    closing.set()
    thread.join(5)
    server.close()


@PAHO_LEAKS_FAILED_TLS_SOCKETS
def test_tail_connects_to_8883_for_mqtts_and_says_so_when_it_fails(
    mqtts_listener: threading.Event, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"broker": {"url": f"mqtts://{HOST}"}}))
    assert main(["tail", "--config", str(config), "--timeout", "1"]) == 1
    assert mqtts_listener.is_set()
    assert f"cannot reach the broker at {HOST}:8883" in capsys.readouterr().err


@PAHO_LEAKS_FAILED_TLS_SOCKETS
def test_the_worker_connects_to_8883_for_mqtts(mqtts_listener: threading.Event) -> None:
    worker = _worker(_settings(BrokerSettings(url=f"mqtts://{HOST}"))).start()
    try:
        assert mqtts_listener.wait(10), "the worker never connected to 8883"
    finally:
        worker.stop()
