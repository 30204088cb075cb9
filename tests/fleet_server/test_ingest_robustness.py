"""The worker outlives what goes wrong around it: a database outage, an unforeseen error, a
packet larger than it accepts. Nothing is acknowledged before it is stored, nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet_protocol.topics import MessageKind, device_topic
from fleet_server import crud
from fleet_server.settings import DatabaseSettings
from tests.conftest import make_reading
from tests.fleet_server.ingest_rig import (
    FAST,
    enrol,
    ingest_rig,
    refusing_connections,
    successor,
)
from tests.waiting import wait_until


def test_messages_published_during_a_database_outage_are_all_stored_once_it_is_back(
    database: DatabaseSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fleet_server.ingest.worker")
    ingest = FAST.model_copy(update={"known_devices_ttl_s": 0.5})
    with ingest_rig(database, tmp_path, ingest=ingest, devices=["veh-1"]) as rig:
        for seq in range(5):
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
        wait_until(lambda: rig.count("reading") == 5, 10, "the first readings stored")
        enrol(rig.engine, "veh-2")  # not in the worker's list yet: it must read the list again

        with refusing_connections(database):
            # veh-2 first: the first batch of the outage has a device the worker must look up.
            for seq in range(5, 10):
                rig.publish(MessageKind.READINGS, make_reading(device_id="veh-2", seq=seq))
                rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
            wait_until(
                lambda: rig.value("roadsign_ingest_storage_errors_total") >= 2,
                10,
                "the worker to fail against the database, and try again",
            )

        for seq in range(10, 15):
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
        wait_until(lambda: rig.count("reading") == 20, 20, "every reading stored after the outage")
        assert rig.value("roadsign_ingested_total", kind="readings") == 20
        assert rig.value("roadsign_ingest_rejected_total", reason="unknown_device") == 0
        assert rig.value("roadsign_ingest_duplicates_total") == 0
        # What failed was reading the device list (veh-2 was not in it), not only a commit.
        assert any("reading the device list failed" in r.message for r in caplog.records)


def test_a_worker_stopped_during_an_outage_leaves_its_batch_to_the_next_one(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    with ingest_rig(database, tmp_path, devices=["veh-1"]) as rig:
        with refusing_connections(database):
            for seq in range(5):
                rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
            wait_until(
                lambda: rig.value("roadsign_ingest_storage_errors_total") >= 1,
                10,
                "the worker to fail against the database",
            )
            stopping = time.monotonic()
            rig.worker.stop()
            assert time.monotonic() - stopping < 5  # no waiting out the outage
        # Nothing was acknowledged: the broker hands the batch to the next session.
        with successor(rig):
            wait_until(lambda: rig.count("reading") == 5, 20, "the successor to store the batch")


def test_an_unexpected_error_while_storing_is_retried_and_loses_nothing(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = 2
    store = crud.insert_readings

    def failing_twice(session: Any, *, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("a bug nobody foresaw")
        return store(session, rows=rows)

    with ingest_rig(database, tmp_path, devices=["veh-1"]) as rig:
        monkeypatch.setattr(crud, "insert_readings", failing_twice)  # our own interface
        for seq in range(10):
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
        wait_until(lambda: rig.count("reading") == 10, 20, "the readings stored after retries")
        assert rig.value("roadsign_ingest_flush_errors_total", stage="store") == 2
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=10))
        wait_until(lambda: rig.count("reading") == 11, 10, "the flusher to go on")
        assert rig.value("roadsign_ingested_total", kind="readings") == 11


def test_the_broker_never_delivers_a_packet_over_the_workers_maximum(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    with ingest_rig(database, tmp_path, devices=["veh-1"]) as rig:
        limit = rig.settings.ingest.max_packet_bytes
        topic = device_topic("veh-1", MessageKind.READINGS)
        rig.publisher.publish(topic, b"{" + b" " * limit + b"}", 1).wait_for_publish(10)
        # Delivered in order after it: once this one is stored, the big one would have come.
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=1))
        wait_until(lambda: rig.count("reading") == 1, 10, "the normal reading stored")
        assert rig.value("roadsign_ingest_rejected_total", reason="too_large") == 0
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=2))
        wait_until(lambda: rig.count("reading") == 2, 10, "ingestion to go on")
