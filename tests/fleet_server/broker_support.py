"""A fleet server whose broker runs on the configuration ``roadsign-fleet broker-config`` writes.

Shared by the tests of enrolment and of the broker's accounts: the settings of a managed broker,
that broker started on its generated files, the API serving those settings as the admin, and
MQTT clients that report what the broker answered.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.services.broker_auth.config import Listener, write_broker_config
from fleet_server.services.broker_auth.sync import committed_accounts
from fleet_server.settings import (
    AuthSettings,
    BrokerAuthBackend,
    BrokerSettings,
    DatabaseSettings,
    EnrolmentSettings,
    IngestSettings,
    ServerSettings,
)
from tests.mosquitto import Broker, free_port

ADMIN = "rsf_enrol-admin"
SERVER_PASSWORD = "server-secret-for-tests"
BROKER_ADMIN_PASSWORD = "broker-admin-secret-for-tests"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def managed_settings(
    database: DatabaseSettings, tmp_path: Path, backend: BrokerAuthBackend, port: int
) -> ServerSettings:
    """Server settings whose broker on `port` has its accounts kept by `backend`."""
    files: dict[str, Path] = {}
    if backend == "password_file":
        files = {
            "password_file": tmp_path / "auth" / "passwords",
            "acl_file": tmp_path / "auth" / "acl",
            "mosquitto_pid_file": tmp_path / "broker" / "mosquitto.pid",
        }
    url = f"mqtt://127.0.0.1:{port}"
    return ServerSettings(
        database=database,
        broker=BrokerSettings(
            url=url, username="fleet-server", password=SecretStr(SERVER_PASSWORD)
        ),
        auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN)),
        enrolment=EnrolmentSettings(
            broker_public_url=url,
            broker_auth=backend,
            broker_admin_password=SecretStr(BROKER_ADMIN_PASSWORD),
            broker_admin_timeout_s=3,
            **files,
        ),
        ingest=IngestSettings(batch_size=50, batch_interval_s=0.05, metrics_port=0),
    )


def generated_broker(settings: ServerSettings, workdir: Path, *, force: bool = False) -> Broker:
    """A broker on the generated configuration, holding the committed fleet's accounts."""
    engine = make_engine(settings.database)
    try:
        accounts = committed_accounts(settings, engine)
    finally:
        engine.dispose()
    port = int(settings.broker.url.rpartition(":")[2])
    write_broker_config(
        settings,
        accounts,
        listener=Listener("127.0.0.1", port),
        out_dir=workdir,
        run_as=getpass.getuser(),
        force=force,
    )
    return Broker(workdir, config=workdir / "mosquitto.conf", port=port)


@contextmanager
def managed_broker(
    database: DatabaseSettings, tmp_path: Path, backend: BrokerAuthBackend
) -> Iterator[tuple[ServerSettings, Broker]]:
    """Settings whose accounts `backend` keeps, and their broker, started, on a free port."""
    settings = managed_settings(database, tmp_path, backend, free_port())
    broker = generated_broker(settings, tmp_path / "broker").start()
    try:
        yield settings, broker
    finally:
        broker.stop()


@contextmanager
def serving(settings: ServerSettings) -> Iterator[tuple[TestClient, Engine]]:
    """The API (started, broker reconciled) as the admin, and its engine."""
    engine = make_engine(settings.database)
    try:
        with TestClient(create_app(settings, engine), headers=HEADERS) as api:
            yield api, engine
    finally:
        engine.dispose()


def connect(broker: Broker, user: str, password: str | None) -> tuple[mqtt.Client, ReasonCode]:
    """A client connected as `user` (client id `user`), and the broker's CONNACK reason."""
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


def publish(client: mqtt.Client, topic: str, payload: bytes) -> ReasonCode:
    """Publish at QoS 1; the broker's PUBACK reason."""
    acked = threading.Event()
    outcome: dict[str, ReasonCode] = {}

    def published(c: mqtt.Client, u: object, mid: int, reason: ReasonCode, p: object) -> None:
        outcome["reason"] = reason
        acked.set()

    client.on_publish = published
    client.publish(topic, payload, qos=1)
    assert acked.wait(10), "no PUBACK"
    return outcome["reason"]


def disconnect(client: mqtt.Client) -> None:
    """Stop the client's loop and hang up."""
    client.loop_stop()
    client.disconnect()
