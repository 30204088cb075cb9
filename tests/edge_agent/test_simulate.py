"""``roadsign-agent simulate``: virtual devices deliver every reading, each under its own id."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import main
from fleet_protocol.codec import decode_device_message
from fleet_protocol.messages import HealthReport, Reading, StatusMessage
from tests.mosquitto import Broker
from tests.waiting import wait_until


@pytest.mark.parametrize("per_process", [100, 2], ids=["one-process", "split-over-processes"])
def test_virtual_devices_deliver_every_reading_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], per_process: int
) -> None:
    broker = Broker(tmp_path / "broker").start()
    seen: list[object] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: seen.append(
        decode_device_message(m.topic, bytes(m.payload))[1]
    )
    client.connect("127.0.0.1", broker.port)
    client.subscribe("roadsign/v1/devices/+/#", qos=1)
    client.loop_start()
    try:
        code = main(
            [
                "simulate",
                "--devices",
                "5",
                "--broker",
                broker.url,
                "--rate",
                "10",
                "--duration",
                "2",
                "--health-interval",
                "1",
                "--outbox-dir",
                str(tmp_path / "outboxes"),
                "--devices-per-process",
                str(per_process),
            ]
        )
        summary = json.loads(capsys.readouterr().out)
        assert code == 0
        assert summary["all_delivered"] is True
        assert summary["never_connected"] == 0
        assert summary.get("processes", 1) == -(-5 // per_process)
        wait_until(
            lambda: len([m for m in seen if isinstance(m, Reading)]) >= summary["readings_sent"],
            15,
            "every reading sent at the subscriber",
        )
        readings = [m for m in seen if isinstance(m, Reading)]
        per_device = Counter(r.device_id for r in readings)
        assert sorted(per_device) == [f"sim-{i:05d}" for i in range(5)]
        assert len({(r.device_id, r.seq) for r in readings}) == summary["readings_sent"]
        # Two seconds at one report a second: every device reported its health.
        assert {m.device_id for m in seen if isinstance(m, HealthReport)} == set(per_device)
        statuses = [m for m in seen if isinstance(m, StatusMessage)]
        assert {s.reason for s in statuses} >= {"connected", "shutdown"}
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()
