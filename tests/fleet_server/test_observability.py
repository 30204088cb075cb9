"""JSON logs carry the trace; HTTP requests and ingest batches are traced; tail prints readings."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from fleet_protocol.codec import encode
from fleet_protocol.topics import FLEET_READINGS_TOPIC, MessageKind, device_topic
from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.cli import main
from fleet_server.db import make_engine, session_scope
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.models import DeviceCreate
from fleet_server.observability import JsonFormatter, make_tracer_provider
from fleet_server.settings import (
    AuthSettings,
    BrokerSettings,
    DatabaseSettings,
    IngestSettings,
    ServerSettings,
)
from tests.conftest import make_reading
from tests.mosquitto import Broker
from tests.waiting import wait_until


def test_log_records_are_json_with_the_trace_and_extra_fields() -> None:
    exporter = InMemorySpanExporter()
    tracer = make_tracer_provider("test", exporter=exporter).get_tracer("t")
    record = logging.LogRecord("fleet", logging.WARNING, __file__, 1, "stored %d rows", (3,), None)
    record.batch = 7
    with tracer.start_as_current_span("outer") as span:
        line = json.loads(JsonFormatter().format(record))
        expected_trace = f"{span.get_span_context().trace_id:032x}"
    assert line["message"] == "stored 3 rows"
    assert line["level"] == "warning"
    assert line["batch"] == 7
    assert line["trace_id"] == expected_trace


def test_every_request_is_a_span_named_by_its_route(database: DatabaseSettings) -> None:
    exporter = InMemorySpanExporter()
    engine = make_engine(database)
    settings = ServerSettings(
        database=database, auth=AuthSettings(bootstrap_admin_token=SecretStr("rsf_t"))
    )
    app = create_app(settings, engine, tracer_provider=make_tracer_provider("t", exporter=exporter))
    with TestClient(app) as client:
        client.get("/api/v1/devices/veh-7", headers={"Authorization": "Bearer rsf_t"})
        client.get("/api/v1/devices")
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert spans["GET /api/v1/devices/{device_id}"]["http.response.status_code"] == 404
    assert spans["GET /api/v1/devices"]["http.response.status_code"] == 401
    engine.dispose()


def test_every_ingest_batch_is_a_span_counting_its_messages_and_new_readings(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    broker = Broker(tmp_path / "broker").start()
    engine = make_engine(database)
    with session_scope(engine) as session:
        crud.create_device(session, device=DeviceCreate(device_id="veh-1"))
    settings = ServerSettings(
        database=database,
        broker=BrokerSettings(url=broker.url),
        ingest=IngestSettings(batch_size=50, batch_interval_s=0.05, metrics_port=0),
    )
    worker = IngestWorker(
        settings,
        engine,
        IngestMetrics(),
        client_id="ingest-traced",
        tracer_provider=make_tracer_provider("t", exporter=exporter),
    ).start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    topic = device_topic("veh-1", MessageKind.READINGS)

    def batches() -> list[dict[str, object]]:
        spans = exporter.get_finished_spans()
        return [dict(s.attributes or {}) for s in spans if s.name == "ingest batch"]

    try:
        assert worker.wait_ready(10)
        for seq in (1, 2, 3, 2):  # the last one a redelivery: a message, not a new reading
            publisher.publish(topic, encode(make_reading(device_id="veh-1", seq=seq)), 1)
        wait_until(
            lambda: sum(int(str(b["messages"])) for b in batches()) == 4, 20, "4 messages traced"
        )
        assert sum(int(str(b["new_readings"])) for b in batches()) == 3
    finally:
        publisher.loop_stop()
        worker.stop()
        engine.dispose()
        broker.stop()


# Mosquitto's default log types, plus one line per SUBSCRIBE ("<client> <qos> <filter>").
LOG_SUBSCRIPTIONS = "".join(
    f"log_type {kind}\n" for kind in ("error", "warning", "notice", "information", "subscribe")
)


def test_tail_prints_fleet_readings_as_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = Broker(tmp_path / "broker", extra_config=LOG_SUBSCRIPTIONS).start()
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"broker": {"url": broker.url}}))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        main(["tail", "--config", str(config), "--count", "2", "--timeout", "20"])))  # fmt: skip
    thread.start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    try:
        # Published before the tail's subscription is in place, a reading would never reach it.
        wait_until(
            lambda: f" {FLEET_READINGS_TOPIC}\n" in (broker.workdir / "mosquitto.log").read_text(),
            20,
            "the tail's subscription at the broker",
        )
        for seq in (1, 2):
            publisher.publish(
                FLEET_READINGS_TOPIC, encode(make_reading(seq=seq)), qos=1
            ).wait_for_publish(5)
        thread.join(25)
        assert result == [0]
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["seq"] for line in lines] == [1, 2]
    finally:
        publisher.loop_stop()
        broker.stop()
