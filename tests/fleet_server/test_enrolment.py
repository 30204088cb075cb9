"""Enrolment against a Mosquitto that only knows what the server told it: own topics only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr
from sqlalchemy import Engine, text

from fleet_protocol.codec import encode
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server.api.main import create_app
from fleet_server.credentials import acl_file, mosquitto_hash, password_file
from fleet_server.db import make_engine
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import (
    AuthSettings,
    BrokerSettings,
    DatabaseSettings,
    EnrolmentSettings,
    IngestSettings,
    ServerSettings,
)
from tests.conftest import make_reading
from tests.mosquitto import Broker

ADMIN = "rsf_enrol-admin"
SERVER_PASSWORD = "server-secret-for-tests"


@pytest.fixture
def secured(database: DatabaseSettings, tmp_path: Path) -> Iterator[tuple[ServerSettings, Broker]]:
    passwords, acl, pid = tmp_path / "passwords", tmp_path / "acl", tmp_path / "mosquitto.pid"
    passwords.write_text(password_file({"fleet-server": mosquitto_hash(SERVER_PASSWORD)}))
    acl.write_text(acl_file("fleet-server"))
    broker = Broker(
        tmp_path / "broker", extra_config=(f"password_file {passwords}\nacl_file {acl}\n")
    ).start()
    broker.config.write_text(
        broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    broker.stop()
    broker.start()
    assert broker.process is not None
    pid.write_text(str(broker.process.pid))
    settings = ServerSettings(
        database=database,
        broker=BrokerSettings(
            url=broker.url, username="fleet-server", password=SecretStr(SERVER_PASSWORD)
        ),
        auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN)),
        enrolment=EnrolmentSettings(
            broker_public_url=broker.url,
            password_file=passwords,
            acl_file=acl,
            mosquitto_pid_file=pid,
        ),
        ingest=IngestSettings(batch_size=10, batch_interval_s=0.05, metrics_port=0),
    )
    yield settings, broker
    broker.stop()


def _connect(broker: Broker, user: str, password: str | None) -> tuple[mqtt.Client, ReasonCode]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    result: dict[str, ReasonCode] = {}
    done = threading.Event()

    def connected(c: mqtt.Client, u: object, f: object, reason: ReasonCode, p: object) -> None:
        result["reason"] = reason
        done.set()

    client.on_connect = connected
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert done.wait(10), "no CONNACK"
    return client, result["reason"]


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> ReasonCode:
    acked = threading.Event()
    outcome: dict[str, ReasonCode] = {}

    def published(c: mqtt.Client, u: object, mid: int, reason: ReasonCode, p: object) -> None:
        outcome["reason"] = reason
        acked.set()

    client.on_publish = published
    client.publish(topic, payload, qos=1)
    assert acked.wait(10), "no PUBACK"
    return outcome["reason"]


def _rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        return [
            (r[0], int(r[1]))
            for r in connection.execute(text("SELECT device_id, seq FROM reading"))
        ]


def test_devices_get_their_own_credentials_and_topics_only(
    secured: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = secured
    engine = make_engine(settings.database)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(create_app(settings, engine)) as api:
        a = api.post("/api/v1/devices", json={"device_id": "veh-a"}, headers=admin).json()
        b = api.post("/api/v1/devices", json={"device_id": "veh-b"}, headers=admin).json()
        assert a["username"] == "veh-a"
        assert a["password"]
        assert a["broker_url"] == broker.url
        worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ingest-acl").start()
        assert worker.wait_ready(10)  # subscribed before anything is sent
        device_a, reason = _connect(broker, "veh-a", a["password"])
        try:
            assert not reason.is_failure
            own = _publish(
                device_a,
                device_topic("veh-a", MessageKind.READINGS),
                encode(make_reading(device_id="veh-a", seq=1)),
            )
            assert own.value == 0  # success, and somebody (the worker) subscribed
            spoof = _publish(
                device_a,
                device_topic("veh-b", MessageKind.READINGS),
                encode(make_reading(device_id="veh-b", seq=2)),
            )
            assert spoof.value == 135  # MQTT v5: Not authorized
            deadline = threading.Event()
            for _ in range(100):
                if _rows(engine):
                    break
                deadline.wait(0.1)
            deadline.wait(1.0)  # anything that slipped through would be stored by now
            assert _rows(engine) == [("veh-a", 1)]
        finally:
            device_a.loop_stop()
            device_a.disconnect()
        _, wrong = _connect(broker, "veh-b", "not-the-password")
        assert wrong.is_failure
        _, anonymous = _connect(broker, "veh-c", None)
        assert anonymous.is_failure
        client_b, before = _connect(broker, "veh-b", b["password"])
        client_b.loop_stop()
        client_b.disconnect()
        assert not before.is_failure
        api.post("/api/v1/devices/veh-b/decommission", headers=admin)
        _, after = _connect(broker, "veh-b", b["password"])
        assert after.is_failure  # revoked at once
        worker.stop()
    engine.dispose()


def test_decommission_disconnects_a_device_that_is_still_connected(
    secured: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = secured
    engine = make_engine(settings.database)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(create_app(settings, engine)) as api:
        enrolled = api.post("/api/v1/devices", json={"device_id": "veh-d"}, headers=admin).json()
        client, reason = _connect(broker, "veh-d", enrolled["password"])
        dropped = threading.Event()
        client.on_disconnect = lambda *args: dropped.set()
        client.reconnect_delay_set(60, 60)  # a retry inside the test would hide the kick
        try:
            assert not reason.is_failure
            assert not dropped.wait(0.5)
            assert api.post("/api/v1/devices/veh-d/decommission", headers=admin).is_success
            assert dropped.wait(10), "the broker kept a decommissioned device connected"
        finally:
            client.loop_stop()
    engine.dispose()
