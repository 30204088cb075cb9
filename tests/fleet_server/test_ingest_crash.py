"""A kill -9 of the ingestion worker under load loses nothing and duplicates nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from fleet_protocol.codec import encode
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server import crud
from fleet_server.db import make_engine, session_scope
from fleet_server.models import DeviceCreate
from fleet_server.settings import DatabaseSettings
from tests.conftest import make_reading
from tests.mosquitto import Broker
from tests.waiting import wait_until

DEVICES = [f"veh-{i}" for i in range(10)]
PER_DEVICE = 200


def _worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet_server.cli",
                "ingest",
                "--config",
                str(config),
                "--client-id",
                "ingest-crash",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_and_duplicates_nothing(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    broker = Broker(tmp_path / "broker", extra_config="max_queued_messages 100000\n").start()
    engine = make_engine(database)
    with session_scope(engine) as session:
        for device_id in DEVICES:
            crud.create_device(session, device=DeviceCreate(device_id=device_id))
    config = tmp_path / "fleet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database.url},
                "broker": {"url": broker.url},
                "ingest": {"batch_size": 100, "batch_interval_s": 0.1, "metrics_port": 0},
            }
        )
    )
    log = tmp_path / "worker.log"
    worker = _worker(config, log)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    try:

        def stored() -> int:
            with engine.connect() as connection:
                return int(connection.execute(text("SELECT count(*) FROM reading")).scalar_one())

        deadline = time.monotonic() + 30
        while stored() == 0 and time.monotonic() < deadline:  # worker up and subscribed
            publisher.publish(
                device_topic(DEVICES[0], MessageKind.READINGS),
                encode(make_reading(device_id=DEVICES[0], seq=10**6)),
                1,
            ).wait_for_publish(5)
            time.sleep(0.2)
        total = PER_DEVICE * len(DEVICES)
        killed = False
        for i in range(PER_DEVICE):
            for device_id in DEVICES:
                info = publisher.publish(
                    device_topic(device_id, MessageKind.READINGS),
                    encode(make_reading(device_id=device_id, seq=i)),
                    1,
                )
                info.wait_for_publish(5)
            if i == PER_DEVICE // 3 and not killed:
                worker.send_signal(signal.SIGKILL)  # mid-stream, batches in flight
                worker.wait(10)
                killed = True
            if i == PER_DEVICE // 2:
                worker = _worker(config, log)  # same client id: the session resumes
            time.sleep(0.005)
        expected = total + 1  # plus the start-up probe
        assert killed
        wait_until(lambda: stored() >= expected, 60, f"all {expected} readings stored")
        # Nothing lost. Nothing can be stored twice: (device_id, seq) is the table's unique key
        # (tests/fleet_server/test_crud.py), so the count is the number of distinct readings.
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT device_id, seq FROM reading"))
            stored_pairs = {(device_id, int(seq)) for device_id, seq in rows}
        published = {(d, s) for d in DEVICES for s in range(PER_DEVICE)} | {(DEVICES[0], 10**6)}
        assert stored_pairs == published
    finally:
        publisher.loop_stop()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        engine.dispose()
        broker.stop()
