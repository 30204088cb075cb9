"""The agent over TLS to a real Mosquitto with a test CA: delivered, or refused clearly and kept.

The broker's TLS listener demands a client certificate (mutual TLS); its plain listener serves
the test's own observer, so what arrives is seen without trusting the code under test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from edge_agent.agent import OutboxSink
from edge_agent.cli import main
from edge_agent.outbox import Outbox
from edge_agent.profile import DeviceProfile
from edge_agent.runner import build_sink
from fleet_protocol.codec import decode_device_message
from fleet_protocol.topics import MessageKind
from tests.conftest import MODEL, make_reading
from tests.edge_agent.test_mqtt_link import DEVICE, Subscriber
from tests.edge_agent.test_runner import _profile
from tests.mosquitto import Broker, BrokerTls
from tests.tls import Pki
from tests.waiting import wait_until


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_client_cert=True)
    broker = Broker(tmp_path / "broker", tls=tls).start()
    yield broker
    broker.stop()


def _broker_log(broker: Broker) -> str:
    return (broker.workdir / "mosquitto.log").read_text()


def test_the_agent_delivers_a_drive_through_mutual_tls(
    broker: Broker, pki: Pki, tmp_path: Path
) -> None:
    subscriber = Subscriber(broker)
    try:
        profile = _profile(tmp_path)
        data = yaml.safe_load(profile.read_text())
        data["broker"] = {
            "url": broker.tls_url,
            "tls": {
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
        }
        profile.write_text(yaml.safe_dump(data))
        assert main(["run", "--config", str(profile), "--sink", "mqtt"]) == 0
        wait_until(lambda: subscriber.last_reason() == "shutdown", 15, "the shutdown status")
        assert len(subscriber.readings()) == 1
        assert Outbox(tmp_path / "outbox.sqlite3", max_messages=10, max_bytes=10**6).depth == 0
        assert broker.listener_of(DEVICE) == broker.tls_port
    finally:
        subscriber.close()


TlsSink = Callable[..., tuple[OutboxSink, Outbox]]


@pytest.fixture
def tls_sink(tmp_path: Path, broker: Broker) -> Iterator[TlsSink]:
    """Starts the agent's sink (outbox and MQTT link) for the TLS listener with given files."""
    started: list[tuple[OutboxSink, Outbox]] = []

    def start(**tls: Path) -> tuple[OutboxSink, Outbox]:
        profile = DeviceProfile.model_validate(
            {
                "identity": {"device_id": DEVICE},
                "broker": {"url": broker.tls_url, "tls": {k: str(v) for k, v in tls.items()}},
                "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            }
        )
        sink, outbox = build_sink(profile, DEVICE, "0.1.0", MODEL)
        assert isinstance(sink, OutboxSink)
        assert outbox is not None
        started.append((sink, outbox))
        return sink, outbox

    yield start
    for sink, outbox in started:
        assert sink.link is not None
        sink.link.stop(timeout=0.1)  # nothing can drain: do not wait for it
        outbox.close()


def _emit_one(sink: OutboxSink) -> int:
    seq = sink.next_seq()
    sink.emit(MessageKind.READINGS, make_reading(device_id=DEVICE, seq=seq))
    return seq


def _assert_kept_and_not_sent(sink: OutboxSink, outbox: Outbox, seq: int, seen: Subscriber) -> None:
    assert sink.link is not None
    assert not sink.link.connected
    assert [decode_device_message(m.topic, m.payload)[1].seq for m in outbox.pending(10)] == [seq]
    assert seen.messages == []


def test_without_its_client_certificate_the_agent_is_refused_and_keeps_the_reading(
    broker: Broker, pki: Pki, tls_sink: TlsSink
) -> None:
    subscriber = Subscriber(broker)
    try:
        sink, outbox = tls_sink(ca_file=pki.ca)
        seq = _emit_one(sink)
        wait_until(
            lambda: "peer did not return a certificate" in _broker_log(broker),
            15,
            "the broker refusing a client without a certificate",
        )
        _assert_kept_and_not_sent(sink, outbox, seq, subscriber)
    finally:
        subscriber.close()


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake to the garbage collector
# (`Client._ssl_wrap_socket`), which warns; nothing of ours holds it.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_a_broker_certificate_from_another_ca_is_refused_clearly_and_the_reading_kept(
    broker: Broker, pki: Pki, tls_sink: TlsSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.mqtt_link")
    subscriber = Subscriber(broker)
    try:
        sink, outbox = tls_sink(
            ca_file=pki.other_ca, cert_file=pki.client_cert, key_file=pki.client_key
        )
        seq = _emit_one(sink)
        refusal = wait_until(
            lambda: [m for r in caplog.records if "cannot connect" in (m := r.getMessage())],
            15,
            "a warning that the broker cannot be reached",
        )
        assert broker.tls_url in refusal[0]
        assert "certificate verify failed" in refusal[0]
        _assert_kept_and_not_sent(sink, outbox, seq, subscriber)
    finally:
        subscriber.close()
