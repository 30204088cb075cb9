"""Ingestion with the real Mosquitto and PostgreSQL: rows for good messages, rejects by reason."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, inspect, text

from fleet_protocol.codec import decode_as, encode
from fleet_protocol.messages import (
    CameraState,
    DeviceState,
    HealthReport,
    ModelRef,
    Reading,
    StatusMessage,
)
from fleet_protocol.topics import FLEET_READINGS_TOPIC, MessageKind, device_topic
from fleet_server import crud
from fleet_server.db import make_engine, session_scope
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import BrokerSettings, DatabaseSettings, IngestSettings, ServerSettings
from tests.conftest import MODEL, make_reading
from tests.fleet_server.ingest_rig import enrol, open_publisher
from tests.mosquitto import Broker, BrokerTls
from tests.tls import Pki
from tests.waiting import wait_until

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HEALTH_MODEL = ModelRef(version="2026.12.1", sha256="cd" * 32)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


def _settings(database: DatabaseSettings, broker: Broker) -> ServerSettings:
    return ServerSettings(
        database=database,
        broker=BrokerSettings(url=broker.url),
        ingest=IngestSettings(batch_size=50, batch_interval_s=0.05, metrics_port=0),
    )


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def test_migration_creates_the_tables(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"device", "reading", "healthsample", "alembic_version"} <= tables


def test_good_messages_become_rows_once_and_bad_ones_are_counted_by_reason(
    database: DatabaseSettings, engine: Engine, broker: Broker
) -> None:
    enrol(engine, "veh-1", "veh-2")
    metrics = IngestMetrics()
    worker = IngestWorker(
        _settings(database, broker), engine, metrics, client_id="ingest-test"
    ).start()
    fleet: list[Reading] = []
    watching = threading.Event()
    watcher = open_publisher(broker)
    watcher.on_message = lambda c, u, m: fleet.append(decode_as(Reading, bytes(m.payload)))
    watcher.on_subscribe = lambda *_: watching.set()
    watcher.subscribe(FLEET_READINGS_TOPIC, qos=1)
    publisher = open_publisher(broker)
    try:
        assert worker.wait_ready(10)
        assert watching.wait(10), "the fleet-topic watcher could not subscribe"
        readings_topic = device_topic("veh-1", MessageKind.READINGS)
        for seq in range(20):
            publisher.publish(readings_topic, encode(make_reading(device_id="veh-1", seq=seq)), 1)
        publisher.publish(readings_topic, encode(make_reading(device_id="veh-1", seq=3)), 1)
        publisher.publish(readings_topic, b"{not json", 1)
        publisher.publish(readings_topic, encode(make_reading(device_id="veh-2", seq=1)), 1)
        publisher.publish(
            device_topic("ghost-9", MessageKind.READINGS),
            encode(make_reading(device_id="ghost-9", seq=1)),
            1,
        )
        # One byte over the payload limit: the broker still delivers it (the worker's maximum
        # packet size leaves room for the header), and the worker rejects it unparsed.
        publisher.publish(readings_topic, b"{" + b" " * (64 * 1024 - 1) + b"}", 1)
        publisher.publish(
            device_topic("veh-2", MessageKind.HEALTH),
            encode(
                HealthReport(
                    device_id="veh-2",
                    seq=5,
                    timestamp=NOW,
                    agent_version="0.1.0",
                    uptime_s=10,
                    fps=30,
                    cpu_percent=50,
                    rss_mb=200,
                    disk_free_mb=1000,
                    camera_state=CameraState.OK,
                    outbox_depth=0,
                    outbox_dropped=0,
                    model=HEALTH_MODEL,
                )
            ),
            1,
        )
        publisher.publish(
            device_topic("veh-2", MessageKind.STATUS),
            encode(
                StatusMessage(
                    device_id="veh-2",
                    seq=6,
                    timestamp=NOW,
                    state=DeviceState.ONLINE,
                    reason="connected",
                    agent_version="0.1.0",
                )
            ),
            1,
            retain=True,
        )
        wait_until(
            lambda: (
                _count(engine, "reading") == 20
                and metrics.value("roadsign_ingest_rejected_total", reason="too_large") == 1
            ),
            20,
            "20 readings stored and the oversized message rejected",
        )
        wait_until(lambda: _count(engine, "healthsample") == 1, 20, "the health sample stored")
        assert metrics.value("roadsign_ingest_rejected_total", reason="malformed") == 1
        assert metrics.value("roadsign_ingest_rejected_total", reason="device_mismatch") == 1
        assert metrics.value("roadsign_ingest_rejected_total", reason="unknown_device") == 1
        assert metrics.value("roadsign_ingest_duplicates_total") == 1
        assert metrics.value("roadsign_ingested_total", kind="readings") == 20
        with session_scope(engine) as session:
            device = crud.get_device(session, device_id="veh-2")
            assert device is not None
            assert device.status == "online"
            assert device.last_seen_at == NOW
            # It sent no reading: its health report says which model it runs.
            assert (device.model_version, device.model_sha256) == (
                HEALTH_MODEL.version,
                HEALTH_MODEL.sha256,
            )
            veh1 = crud.get_device(session, device_id="veh-1")
            assert veh1 is not None
            assert veh1.model_version == MODEL.version
        # A last new reading is republished after everything published before it (one worker,
        # batches in order): once it is in, a republished duplicate would be in too.
        publisher.publish(readings_topic, encode(make_reading(device_id="veh-1", seq=20)), 1)
        wait_until(lambda: any(r.seq == 20 for r in fleet), 20, "the last reading republished")
        assert sorted(r.seq for r in fleet) == list(range(21))  # each new reading once
    finally:
        publisher.loop_stop()
        watcher.loop_stop()
        worker.stop()


def test_a_valid_message_the_database_refuses_is_dropped_counted_and_stalls_nothing(
    database: DatabaseSettings, engine: Engine, broker: Broker
) -> None:
    # Both pass the protocol, and PostgreSQL refuses both: text cannot hold NUL, and
    # frames_seen is an INTEGER column. Retried as a batch, either would stop ingestion.
    enrol(engine, "veh-1")
    metrics = IngestMetrics()
    worker = IngestWorker(
        _settings(database, broker), engine, metrics, client_id="ingest-refused"
    ).start()
    publisher = open_publisher(broker)
    topic = device_topic("veh-1", MessageKind.READINGS)
    try:
        assert worker.wait_ready(10)
        for seq in range(40):
            overrides: dict[str, object] = {}
            if seq == 11:
                overrides["text"] = "8\x000"
            if seq == 29:
                overrides["frames_seen"] = 10**12
            reading = make_reading(device_id="veh-1", seq=seq, **overrides)
            publisher.publish(topic, encode(reading), 1)
        wait_until(lambda: _count(engine, "reading") == 38, 20, "the 38 storable readings")
        wait_until(
            lambda: metrics.value("roadsign_ingest_rejected_total", reason="unstorable") == 2,
            20,
            "both refused readings counted",
        )
        publisher.publish(topic, encode(make_reading(device_id="veh-1", seq=40)), 1)
        wait_until(lambda: _count(engine, "reading") == 39, 20, "ingestion to go on")
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT seq FROM reading ORDER BY seq")).scalars()
            assert list(stored) == [s for s in range(41) if s not in (11, 29)]
        assert metrics.value("roadsign_ingest_storage_errors_total") == 0  # never retried
    finally:
        publisher.loop_stop()
        worker.stop()


def test_the_worker_stores_readings_received_through_tls(
    database: DatabaseSettings, engine: Engine, tmp_path: Path, pki: Pki
) -> None:
    broker = Broker(
        tmp_path / "tls-broker", tls=BrokerTls(pki.ca, pki.server_cert, pki.server_key)
    ).start()
    enrol(engine, "veh-1")
    settings = _settings(database, broker).model_copy(
        update={"broker": BrokerSettings(url=broker.tls_url, ca_file=pki.ca)}
    )
    metrics = IngestMetrics()
    worker = IngestWorker(settings, engine, metrics, client_id="ingest-tls").start()
    publisher = open_publisher(broker)  # on the plain listener: only the worker's side is TLS
    try:
        assert worker.wait_ready(10)
        for seq in range(5):
            publisher.publish(
                device_topic("veh-1", MessageKind.READINGS),
                encode(make_reading(device_id="veh-1", seq=seq)),
                1,
            )
        wait_until(lambda: _count(engine, "reading") == 5, 20, "5 readings stored")
        assert metrics.value("roadsign_ingested_total", kind="readings") == 5
        assert broker.listener_of("ingest-tls") == broker.tls_port
    finally:
        publisher.loop_stop()
        worker.stop()
        broker.stop()


class _FakeClient:
    """Records acknowledgements (our own stand-in for the paho client in a unit test)."""

    def __init__(self) -> None:
        self.acked = 0

    def ack(self, mid: int, qos: int) -> None:
        self.acked += 1


REASONS = ("malformed", "schema", "unsupported_version", "too_large", "device_mismatch")


def test_ten_thousand_fuzzed_payloads_crash_nothing_and_are_all_rejected() -> None:
    metrics = IngestMetrics()
    server = ServerSettings(
        database=DatabaseSettings(url="sqlite://"), ingest=IngestSettings(metrics_port=0)
    )
    worker = IngestWorker(server, make_engine(server.database), metrics, client_id="fuzz")
    client = _FakeClient()
    topic = device_topic("veh-1", MessageKind.READINGS).encode()
    examples = 0

    @settings(
        max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(
        payload=st.binary(max_size=300)
        | st.text(max_size=200).map(str.encode)
        | st.dictionaries(
            st.sampled_from(["device_id", "seq", "timestamp", "bbox", "value"]),
            st.none() | st.integers() | st.text(max_size=5),
            max_size=5,
        ).map(lambda d: json.dumps(d).encode())
    )
    def one(payload: bytes) -> None:
        nonlocal examples
        examples += 1
        message = mqtt.MQTTMessage(mid=examples, topic=topic)
        message.payload = payload
        worker._received(client, None, message)  # type: ignore[arg-type]

    one()
    rejected = sum(metrics.value("roadsign_ingest_rejected_total", reason=r) for r in REASONS)
    assert examples >= 10_000
    assert rejected == examples  # every payload counted as a reject, none queued for storage
    assert client.acked == examples  # and each dropped from the broker
    assert not worker._queue
