"""The OTA updater wired into ``run_agent``: an OtaCommand through a real broker nudges the
updater, which installs the signed assignment from a real TUF repository, reports each state on
ota/status through the outbox, and swaps the frame loop's model while it keeps running; the
local API's /predict reads with the model the agent runs now."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge_agent.profile import DeviceProfile
from edge_agent.runner import run_agent
from fleet_protocol.codec import encode
from fleet_protocol.messages import HealthReport, OtaAction, OtaCommand, OtaStatus
from tests.edge_agent.conftest import write_tiny_bundle
from tests.edge_agent.ota.conftest import BUNDLE, Served
from tests.edge_agent.test_mqtt_link import DEVICE, Subscriber
from tests.mosquitto import Broker, free_port
from tests.waiting import wait_until


def _ota_statuses(subscriber: Subscriber) -> list[OtaStatus]:
    with subscriber.lock:
        return [m for m in subscriber.messages if isinstance(m, OtaStatus)]


def _predicted_by(port: int) -> str:
    """The model version the local API's /predict reads with."""
    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/predict", png.tobytes(), {"Content-Type": "image/png"})
        response = connection.getresponse()
        assert response.status == 200
        return str(json.loads(response.read())["model"]["version"])
    finally:
        connection.close()


def _try_predict(port: int) -> str | None:
    try:
        return _predicted_by(port)
    except OSError:  # not listening yet
        return None


def test_a_command_over_mqtt_installs_the_signed_assignment_in_a_running_agent(
    served: Served, tmp_path: Path
) -> None:
    root = tmp_path / "root.json"
    root.write_bytes(served.repo.trusted_root())
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker)
    api_port = free_port()
    profile = DeviceProfile.model_validate(
        {
            "identity": {"device_id": DEVICE},
            "detector": {
                "backend": "onnxruntime",
                "model_dir": str(write_tiny_bundle(tmp_path / "shipped")),
                "threads": 1,
            },
            # A camera that never answers: the frame loop runs until stopped.
            "camera": {"source": f"http://127.0.0.1:{free_port()}/cam", "kind": "stream"},
            "reporting": {"health_interval_s": 1},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            "broker": {"url": broker.url},
            "api": {"enabled": True, "host": "127.0.0.1", "port": api_port},
            "ota": {
                "enabled": True,
                "repository_url": served.url,
                "trusted_root_file": str(root),
                "state_dir": str(tmp_path / "ota"),
                "check_interval_s": 3600,
            },
        }
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=run_agent, args=(profile,), kwargs={"agent_version": "0.1.0", "stop": stop}
    )
    thread.start()
    try:
        # the first check at start finds no assignment: nothing is reported
        wait_until(lambda: subscriber.last_reason() == "connected", message="the agent's birth")
        wait_until(
            lambda: any(path.endswith("timestamp.json") for path in served.journal.paths()),
            message="the updater's first refresh",
        )
        shipped = wait_until(lambda: _try_predict(api_port), message="the local API answers")
        assert shipped != "2026.12.0"
        info = served.repo.add_model(BUNDLE, "2026.12.0", served.bundle("2026.12.0"))
        served.repo.assign(DEVICE, info, rollout_id="wave-1")
        served.repo.publish()
        command = OtaCommand(
            device_id=DEVICE,
            seq=1,
            timestamp=datetime.now(UTC),
            command_id=uuid.uuid4(),
            action=OtaAction.INSTALL,
            model_version="2026.12.0",
            target_path=info.path,
            rollout_id="wave-1",
        )
        subscriber.client.publish(
            f"roadsign/v1/devices/{DEVICE}/ota/command", encode(command), qos=1
        )
        wait_until(
            lambda: any(s.state == "active" for s in _ota_statuses(subscriber)),
            30,
            "the update reported active over MQTT",
        )
        states = [s.state.value for s in _ota_statuses(subscriber)]
        assert states == [
            "received",
            "downloading",
            "verified",
            "staged",
            "smoke_testing",
            "active",
        ]
        active = _ota_statuses(subscriber)[-1]
        assert active.command_id == command.command_id
        assert active.running_model is not None
        assert active.running_model.version == "2026.12.0"
        # the frame loop kept running and now reports the new model in its health
        wait_until(
            lambda: any(
                isinstance(m, HealthReport) and m.model and m.model.version == "2026.12.0"
                for m in list(subscriber.messages)
            ),
            message="a health report naming the new model",
        )
        # the local API reads with the new model too, not with the one it started on
        assert _predicted_by(api_port) == "2026.12.0"
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=60)
        subscriber.close()
        broker.stop()
    assert not thread.is_alive()
