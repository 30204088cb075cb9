"""Twenty real agents, one fleet server: a staged rollout completes, and a worse model stops at its
first stage on the reading-quality gate, its devices rolled back, the others untouched.

Everything is real: PostgreSQL, Mosquitto with per-device accounts (dynamic security), the fleet
server over HTTP with its rollout driver, an ingestion worker, the TUF repository, and twenty
``roadsign-agent run`` processes reading a rendered drive from an MJPEG camera stream at 2 fps,
each with its own enrolment, outbox, broker account, trusted root and A/B slots. The worse model
is models/default with its speed labels permuted (tests/edge_agent/ota/shadow_models.py): it
passes its smoke test (its golden set is re-recorded from its own readings), and OCR contradicts
its speed readings on the road, so it reports far fewer of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import (
    DatabaseSettings,
    RepositorySettings,
    RolloutSettings,
    ServerSettings,
)
from tests.conftest import REPO_ROOT
from tests.edge_agent.ota.shadow_models import copy_default, worse_bundle
from tests.fleet_server.broker_support import HEADERS, generated_broker, managed_settings
from tests.fleet_server.repository.support import (
    ONLINE_PASSPHRASE,
    Keys,
    initialise,
    new_keys,
    publish,
)
from tests.mjpeg import DriveStream, drive_stream
from tests.mosquitto import free_port
from tests.serving import serving
from tests.waiting import wait_until

DEVICES = [f"car-{i:02d}" for i in range(20)]
SHIPPED = REPO_ROOT / "models" / "default"
GOOD = "good-2"
WORSE = "worse-3"
# The gates judge a window of this many seconds before each device's assignment and since it.
WINDOW_S = 40.0
HEALTH_S = 4.0


@dataclass
class Stack:
    """The running fleet: its API, settings, database, keys and the agents' processes."""

    url: str
    settings: ServerSettings
    engine: Engine
    keys: Keys
    agents: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers=HEADERS, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(self.url + path, json=body, headers=HEADERS, timeout=60)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def alive(self) -> None:
        """Fail at once, naming them, if agents died (a wait would only time out)."""
        dead = {d: p.returncode for d, p in self.agents.items() if p.poll() is not None}
        assert not dead, f"agents exited: {dead}; their logs are in {self.logs}"

    def running(self) -> dict[str, str | None]:
        """Each device's model version, as its latest health report or reading said."""
        self.alive()
        return {d["device_id"]: d["model_version"] for d in self.get("/api/v1/devices")}

    def health_seconds(self, device: str) -> float:
        """How many seconds the device's stored health reports span."""
        samples = self.get(f"/api/v1/devices/{device}/health")
        if len(samples) < 2:
            return 0.0
        first, last = (datetime.fromisoformat(samples[i]["observed_at"]) for i in (0, -1))
        return (last - first).total_seconds()

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        self.alive()
        detail: dict[str, Any] = self.get(f"/api/v1/rollouts/{rollout_id}")
        return detail

    def ota_history(self, device: str) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.get(f"/api/v1/devices/{device}/ota-status")
        return history


def _profile(
    work: Path, device: str, bundle: dict[str, Any], stream: DriveStream, url: str
) -> Path:
    folder = work / device
    folder.mkdir(parents=True)
    (folder / "password").write_text(bundle["password"])
    (folder / "root.json").write_text(json.dumps(bundle["tuf_root"]))
    profile = {
        "identity": {"device_id": device},
        "detector": {"backend": "onnxruntime", "threads": 1},
        "camera": {"source": stream.url, "kind": "stream", "fps_cap": 2},
        "reporting": {"sink": "mqtt", "health_interval_s": HEALTH_S, "include_crops": False},
        "outbox": {"path": str(folder / "outbox.sqlite3")},
        "broker": {
            "url": bundle["broker_url"],
            "username": bundle["username"],
            "password_file": str(folder / "password"),
        },
        "api": {"enabled": False},
        "ota": {
            "enabled": True,
            "repository_url": url,
            "trusted_root_file": str(folder / "root.json"),
            "state_dir": str(folder / "ota"),
            # Nudges bring updates; the poll is the catch-up of a device that missed one.
            "check_interval_s": 60,
            "probation_s": 20,
            # All twenty share two cores: seventeen smoke tests at once slow every frame loop
            # for a while, which on a device of its own would be a regression.
            "probation_min_fps_ratio": 0.2,
            "probation_max_p95_ratio": 20,
            # The server's reading-quality gate is what this test proves: the device's own
            # shadow check would roll the worse model back before the gate could judge it.
            "shadow_enabled": False,
        },
    }
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture
def stack(database: DatabaseSettings, tmp_path: Path) -> Iterator[Stack]:
    settings = managed_settings(database, tmp_path, "dynamic_security", free_port())
    settings = settings.model_copy(
        update={
            "tuf": RepositorySettings(
                online_key_file=tmp_path / "keys" / "online.pem",
                online_key_passphrase=SecretStr(ONLINE_PASSPHRASE),
            ),
            "rollouts": RolloutSettings(
                enabled=True, tick_s=1, window_s=WINDOW_S, max_health_gap_s=3 * HEALTH_S
            ),
        }
    )
    engine = make_engine(database)
    keys = new_keys(tmp_path / "keys")
    initialise(engine, settings, keys, threshold=2)
    broker = generated_broker(settings, tmp_path / "broker").start()
    worker = IngestWorker(settings, engine, IngestMetrics(), client_id="rollout-e2e").start()
    agents: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "agents"
    try:
        assert worker.wait_ready(10)
        with (
            serving(create_app(settings, engine)) as url,
            drive_stream(tmp_path / "drive") as road,
        ):
            stack = Stack(url, settings, engine, keys, agents, logs)
            # One thread each: twenty agents share two cores with the server.
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            for device in DEVICES:
                enrolled = stack.post("/api/v1/devices", {"device_id": device})
                profile = _profile(logs, device, enrolled, road, url)
                with (logs / device / "agent.log").open("wb") as log:
                    agents[device] = subprocess.Popen(
                        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(profile)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=REPO_ROOT,
                    )
            try:
                yield stack
            finally:
                for process in agents.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                for process in agents.values():
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
    finally:
        for process in agents.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        worker.stop()
        broker.stop()
        engine.dispose()


def _policy() -> dict[str, Any]:
    """Gates sized for windows of WINDOW_S seconds with a few readings each: what a test can
    afford, not what a fleet would use (hours of driving)."""
    return {
        "min_window_hours": 25 / 3600,
        "min_driving_hours": 20 / 3600,
        "min_readings": 3,
        "min_devices_with_data": 2,
        "min_finished_installs": 2,
        "install_timeout_s": 240,
        "renudge_interval_s": 30,
        # Twenty agents, the server and PostgreSQL share two cores: installs and smoke tests
        # slow every neighbour's detector for a while, so latency and fps say little here.
        "max_latency_p95_increase_ratio": 5.0,
        "max_fps_drop_ratio": 0.5,
        "max_restarts_per_hour_increase": 1000,
        "max_readings_per_hour_drop_ratio": 0.4,
        "max_confidence_drop": 0.15,
    }


def _create(stack: Stack, rollout_id: str, version: str, stages: list[dict[str, Any]]) -> None:
    stack.post(
        "/api/v1/rollouts",
        {
            "rollout_id": rollout_id,
            "model_name": "roadsign-default",
            "model_version": version,
            "selector": {"all": True},
            "stages": stages,
            "policy": _policy(),
            # Canaries first, in the order given: car-00, car-01, ...
            "spread_by_hash": False,
        },
    )


def _evidence(stack: Stack, rollout_id: str) -> str:
    """The rollout's detail, events and every device's OTA history, kept beside the agents'
    logs for a failed run; the path is the assertion's message."""
    path = stack.logs / f"rollout-{rollout_id}.json"
    dump = {
        "detail": stack.get(f"/api/v1/rollouts/{rollout_id}"),
        "events": stack.get(f"/api/v1/rollouts/{rollout_id}/events"),
        "ota": {d: stack.ota_history(d) for d in DEVICES},
    }
    path.write_text(json.dumps(dump, indent=1, default=str))
    return f"rollout {rollout_id}: see {path}"


def _finished(stack: Stack, rollout_id: str) -> dict[str, Any]:
    """The rollout's detail once it stopped running; empty (falsy) while it runs."""
    detail = stack.rollout(rollout_id)
    return detail if detail["status"] != "running" else {}


@pytest.mark.slow
def test_a_staged_rollout_to_twenty_agents_completes_and_a_worse_model_stops_at_its_first_stage(
    stack: Stack, tmp_path: Path
) -> None:
    shipped = json.loads((SHIPPED / "bundle.json").read_text())
    # The shipped bundle is published too, so that a device running it can be rolled back.
    for bundle in (
        SHIPPED,
        copy_default(tmp_path / "good", GOOD),
        worse_bundle(tmp_path / "worse", WORSE),
    ):
        publish(stack.engine, stack.settings, stack.keys, bundle)

    wait_until(
        lambda: set(stack.running().values()) == {shipped["version"]},
        240,
        "twenty agents reporting on the shipped model",
        every=1,
    )
    # The gates compare each device with itself before: let every device fill a window first.
    wait_until(
        lambda: all(stack.health_seconds(d) >= WINDOW_S for d in DEVICES),
        240,
        "a before-window of health from every device",
        every=2,
    )

    # 1. The good model: 3 canaries, then everyone.
    _create(stack, "good", GOOD, [{"count": 3, "soak_s": 5}, {"percent": 100, "soak_s": 5}])
    done = wait_until(lambda: _finished(stack, "good"), 600, "the good rollout to end", every=2)
    assert done["status"] == "completed", (done["pause_reason"], _evidence(stack, "good"))
    assert done["progress"].get("succeeded") == len(DEVICES), done["progress"]
    wait_until(
        lambda: set(stack.running().values()) == {GOOD}, 60, "every device on the good model"
    )
    events = [e["kind"] for e in stack.get("/api/v1/rollouts/good/events")]
    assert events.count("stage_passed") == 2, events
    assert events[-1] == "completed", events
    for device in DEVICES:
        states = [s["state"] for s in stack.ota_history(device) if s["rollout_id"] == "good"]
        assert "active" in states, (device, states)
        assert "failed" not in states, (device, states)

    # Let the good model fill the worse rollout's before-window.
    installed = {d: stack.health_seconds(d) for d in DEVICES}
    wait_until(
        lambda: all(stack.health_seconds(d) >= installed[d] + WINDOW_S for d in DEVICES[:3]),
        180,
        "a window of health on the good model",
        every=2,
    )

    # 2. The worse model: it must stop at its 3 canaries, rolled back; nobody else is touched.
    _create(stack, "worse", WORSE, [{"count": 3, "soak_s": 5}, {"percent": 100, "soak_s": 5}])
    stopped = wait_until(
        lambda: _finished(stack, "worse"), 400, "the worse rollout to stop", every=2
    )
    assert stopped["status"] == "paused", _evidence(stack, "worse")
    assert stopped["stage"] == 0
    failed = [v for v in stopped["verdicts"] if v["status"] == "fail"]
    assert [v["gate"] for v in failed] == ["reading_quality"], _evidence(stack, "worse")
    assert "readings_per_hour" in stopped["pause_reason"], stopped["pause_reason"]
    canaries, others = DEVICES[:3], DEVICES[3:]
    by_device = {d["device_id"]: d for d in stopped["device_states"]}
    assert {d for d, s in by_device.items() if s["desired"] == "previous"} == set(canaries)
    assert all(by_device[d]["desired"] == "untouched" for d in others)
    wait_until(
        lambda: all(stack.running()[d] == GOOD for d in canaries),
        180,
        "the canaries rolled back to the good model",
        every=2,
    )
    for device in canaries:
        states = [s["state"] for s in stack.ota_history(device) if s["rollout_id"] == "worse"]
        assert "active" in states, (device, states)  # it did install the worse model first
    running = stack.running()
    for device in others:
        assert running[device] == GOOD
        assert not [s for s in stack.ota_history(device) if s["rollout_id"] == "worse"]
    # What the gates saw, kept beside the agents' logs for whoever reads the numbers.
    _evidence(stack, "good")
    _evidence(stack, "worse")
