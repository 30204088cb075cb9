"""Two ingestion workers in one MQTT v5 share group on a real Mosquitto and PostgreSQL.

They split the devices' readings, store each once, and a worker that stops mid-run loses
nothing: it leaves the group before it goes, so the other takes its share, and when it comes
back under its own id nothing it stored already is counted again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from fleet_protocol.codec import encode
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import BrokerSettings, DatabaseSettings, IngestSettings, ServerSettings
from tests.conftest import make_reading
from tests.fleet_server.ingest_rig import enrol, open_publisher
from tests.mosquitto import Broker
from tests.waiting import wait_until

DEVICES = [f"veh-{i}" for i in range(5)]
PER_DEVICE = 60
EVERY_READING = {(device_id, seq) for device_id in DEVICES for seq in range(PER_DEVICE)}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


class Fleet:
    """The enrolled devices' publisher, the workers started, and what got stored."""

    def __init__(self, database: DatabaseSettings, engine: Engine, broker: Broker) -> None:
        self.engine = engine
        self.settings = ServerSettings(
            database=database,
            broker=BrokerSettings(url=broker.url),  # one share group: the default
            ingest=IngestSettings(batch_size=20, batch_interval_s=0.05, metrics_port=0),
        )
        enrol(engine, *DEVICES)
        self.publisher = open_publisher(broker)
        self.workers: list[IngestWorker] = []

    def worker(self, client_id: str) -> IngestWorker:
        worker = IngestWorker(self.settings, self.engine, IngestMetrics(), client_id=client_id)
        self.workers.append(worker.start())
        assert worker.wait_ready(10), f"{client_id} did not subscribe"
        return worker

    def publish(self, seqs: range) -> None:
        """Each device's readings `seqs`, interleaved as a fleet sends them; all PUBACKed."""
        infos = [
            self.publisher.publish(
                device_topic(device_id, MessageKind.READINGS),
                encode(make_reading(device_id=device_id, seq=seq)),
                1,
            )
            for seq in seqs
            for device_id in DEVICES
        ]
        for info in infos:
            info.wait_for_publish(10)

    def stored(self) -> list[tuple[str, int]]:
        with self.engine.connect() as connection:
            rows = connection.execute(text("SELECT device_id, seq FROM reading"))
            return [(device_id, int(seq)) for device_id, seq in rows]

    def close(self) -> None:
        self.publisher.loop_stop()
        for worker in self.workers:
            worker.stop()  # a second stop of a stopped worker is harmless


def _ingested(worker: IngestWorker) -> float:
    return worker.metrics.value("roadsign_ingested_total", kind="readings")


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, broker: Broker) -> Iterator[Fleet]:
    fleet = Fleet(database, engine, broker)
    yield fleet
    fleet.close()


def _one_stops_mid_run(fleet: Fleet) -> tuple[IngestWorker, IngestWorker]:
    """Two workers; the first stops (cleanly) after half of each device's readings."""
    first, second = fleet.worker("ingest-a"), fleet.worker("ingest-b")
    half = PER_DEVICE // 2
    fleet.publish(range(half))
    first.stop()
    fleet.publish(range(half, PER_DEVICE))
    return first, second


def test_two_workers_in_one_group_split_the_readings_and_store_each_once(fleet: Fleet) -> None:
    first, second = fleet.worker("ingest-a"), fleet.worker("ingest-b")
    fleet.publish(range(PER_DEVICE))
    wait_until(lambda: len(fleet.stored()) >= len(EVERY_READING), 30, "every reading stored")
    assert sorted(fleet.stored()) == sorted(EVERY_READING)
    assert _ingested(first) > 0
    assert _ingested(second) > 0  # both took part...
    assert _ingested(first) + _ingested(second) == len(EVERY_READING)  # ...neither twice
    assert first.metrics.value("roadsign_ingest_duplicates_total") == 0
    assert second.metrics.value("roadsign_ingest_duplicates_total") == 0


def test_a_worker_stopped_mid_run_and_back_under_its_id_loses_nothing_and_counts_nothing_twice(
    fleet: Fleet,
) -> None:
    first, second = _one_stops_mid_run(fleet)
    again = fleet.worker("ingest-a")
    wait_until(lambda: len(fleet.stored()) >= len(EVERY_READING), 30, "every reading stored")
    assert sorted(fleet.stored()) == sorted(EVERY_READING)
    assert _ingested(first) + _ingested(second) + _ingested(again) == len(EVERY_READING)


def test_a_worker_stopped_mid_run_for_good_loses_nothing_the_other_takes_over(
    fleet: Fleet,
) -> None:
    first, second = _one_stops_mid_run(fleet)
    wait_until(lambda: len(fleet.stored()) >= len(EVERY_READING), 5, "every reading stored")
    assert sorted(fleet.stored()) == sorted(EVERY_READING)
    assert _ingested(first) + _ingested(second) == len(EVERY_READING)
