"""A running ingestion set-up for tests: a private open Mosquitto, the worker, PostgreSQL.

No broker files are managed (as where the broker's credentials are kept elsewhere): what the
worker admits is decided by the device table alone. Also: the API served over real HTTP by
uvicorn (for responses a test client would buffer: server-sent events, streamed exports), and a
PostgreSQL database made to refuse connections for a while (an outage the worker must outlive).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from sqlalchemy import Engine, make_url, text

from fleet_protocol.codec import encode
from fleet_protocol.messages import Envelope
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server import crud
from fleet_server.db import make_engine, session_scope
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.models import DeviceCreate
from fleet_server.settings import BrokerSettings, DatabaseSettings, IngestSettings, ServerSettings
from tests.mosquitto import Broker

FAST = IngestSettings(batch_size=50, batch_interval_s=0.05, metrics_port=0)
"""Small, quick batches: a test's few messages are stored within a tenth of a second."""


@dataclass
class Rig:
    """What a test drives: publish on a device topic, read the tables and the metrics."""

    settings: ServerSettings
    broker: Broker
    engine: Engine
    worker: IngestWorker
    metrics: IngestMetrics
    publisher: mqtt.Client
    client_id: str

    def publish(self, kind: MessageKind, message: Envelope) -> None:
        """Publish `message` (QoS 1) on its device's `kind` topic; wait until the broker has it."""
        info = self.publisher.publish(device_topic(message.device_id, kind), encode(message), 1)
        info.wait_for_publish(10)

    def count(self, table: str) -> int:
        """Rows in `table`."""
        with self.engine.connect() as connection:
            statement = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - our own table names
            return int(connection.execute(statement).scalar_one())

    def value(self, name: str, **labels: str) -> float:
        """A metric of the worker."""
        return self.metrics.value(name, **labels)


def enrol(engine: Engine, *device_ids: str) -> None:
    """Add devices to the fleet."""
    with session_scope(engine) as session:
        for device_id in device_ids:
            crud.create_device(session, device=DeviceCreate(device_id=device_id, profile="test"))


def open_publisher(broker: Broker) -> mqtt.Client:
    """A connected MQTT v5 client with its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


@contextmanager
def ingest_rig(
    database: DatabaseSettings,
    workdir: Path,
    *,
    ingest: IngestSettings = FAST,
    devices: Iterable[str] = (),
) -> Iterator[Rig]:
    """A broker, an engine, `devices` enrolled, and a worker ready (subscribed) on them."""
    broker = Broker(workdir / "broker").start()
    engine = make_engine(database)
    settings = ServerSettings(
        database=database, broker=BrokerSettings(url=broker.url), ingest=ingest
    )
    enrol(engine, *devices)
    metrics = IngestMetrics()
    client_id = f"ingest-{workdir.name}"
    worker = IngestWorker(settings, engine, metrics, client_id=client_id).start()
    publisher = open_publisher(broker)
    try:
        assert worker.wait_ready(10), "the worker did not subscribe"
        yield Rig(settings, broker, engine, worker, metrics, publisher, client_id)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        worker.stop()
        engine.dispose()
        broker.stop()


@contextmanager
def successor(rig: Rig) -> Iterator[IngestWorker]:
    """A new worker under `rig`'s client id (its session: what the broker kept for it), started."""
    worker = IngestWorker(rig.settings, rig.engine, IngestMetrics(), client_id=rig.client_id)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def admin_url(database: DatabaseSettings) -> str:
    """A libpq URL of the maintenance database on `database`'s server."""
    url = make_url(database.url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@contextmanager
def refusing_connections(database: DatabaseSettings) -> Iterator[None]:
    """`database` refuses new connections and loses its open ones, until the block ends."""
    name = make_url(database.url).database
    assert name
    with psycopg.connect(admin_url(database), autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
