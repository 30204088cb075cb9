"""One reading of the broker URL for every server-side client: ``mqtts://`` without a port is 8883.

The worker and ``roadsign-fleet tail`` are each pointed at ``mqtts://`` on a loopback address
where only this test listens on 8883 (and nothing on 1883): the connection must arrive there.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet_server.cli import main
from fleet_server.db import make_engine
from fleet_server.exceptions import IngestError
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.mqtt_client import BrokerAddress, broker_address
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import BrokerSettings, DatabaseSettings, IngestSettings, ServerSettings

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


def test_a_broker_url_with_a_bad_port_is_refused_naming_it() -> None:
    with pytest.raises(IngestError, match="mqtt://broker:99999"):
        broker_address("mqtt://broker:99999")


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
    settings = ServerSettings(
        database=DatabaseSettings(url="sqlite://"),
        broker=BrokerSettings(url=f"mqtts://{HOST}"),
        ingest=IngestSettings(metrics_port=0),
    )
    worker = IngestWorker(settings, make_engine(settings.database), IngestMetrics(), client_id="w")
    worker.start()
    try:
        assert mqtts_listener.wait(10), "the worker never connected to 8883"
    finally:
        worker.stop()
