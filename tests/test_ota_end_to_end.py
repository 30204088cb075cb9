"""OTA end to end: a model version published and assigned through the fleet server's API reaches
a real agent process, which reports each step back to the server.

Everything is real: PostgreSQL, Mosquitto, the fleet server over HTTP (uvicorn) with its TUF
repository, an ingestion worker storing what devices report, and ``python -m edge_agent.cli
run`` enrolled through the API, trusting the root the enrolment returned, reading an MJPEG
camera served by the test (the golden images in turn). The server nudges the agent on its
ota/command topic when it signs the assignment; the agent refreshes, downloads, verifies,
stages, smoke-tests on the bundle's golden set and switches; its health then names the new
model, which the models API shows; a nudge naming a model nobody assigned it fails and changes
nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from fleet_protocol.codec import encode
from fleet_protocol.messages import OtaAction, OtaCommand
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.migrate import upgrade
from fleet_server.settings import (
    BrokerSettings,
    DatabaseSettings,
    EnrolmentSettings,
    IngestSettings,
)
from tests.conftest import REPO_ROOT
from tests.fleet_server.auth_support import ADMIN, bearer
from tests.fleet_server.repository.support import initialise, new_keys, publish, repo_settings
from tests.mjpeg import mjpeg_camera
from tests.mosquitto import Broker
from tests.postgres import Postgres
from tests.serving import serving
from tests.waiting import wait_until

SHIPPED = REPO_ROOT / "models" / "default"
DEVICE = "rsu-ota-e2e-01"
NEW_VERSION = "ota-e2e-2"
SHIPPED_VERSION = json.loads((SHIPPED / "bundle.json").read_text())["version"]
HAPPY_PATH = ["received", "downloading", "verified", "staged", "smoke_testing", "active"]


GOLDEN = sorted((SHIPPED / "golden").glob("*.jpg"))
FRAMES_PER_IMAGE = 8
BLANK = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
FRAME_INTERVAL_S = 0.25


@pytest.fixture
def camera() -> Iterator[str]:
    """An MJPEG camera over HTTP showing the golden images in turn, each for a few frames, at
    4 fps (the agent reads it as it reads an IP camera); yields its URL."""
    # A blank frame after each image: its signs leave the view, so their tracks end in readings.
    images = [part for path in GOLDEN for part in (path.read_bytes(), BLANK)]
    frames = [image for image in images for _ in range(FRAMES_PER_IMAGE)]
    with mjpeg_camera(frames, fps=1 / FRAME_INTERVAL_S) as url:
        yield url


@dataclass
class Stack:
    """The running fleet: its HTTP base URL, the broker, the engine and where keys are."""

    base: str
    broker: Broker
    engine: Engine
    work: Path


def new_version(work: Path) -> Path:
    """models/default under a new version: the same artifacts and golden set, which still pass;
    the bundle and detector sidecars renamed (readings and health name the detector's)."""
    bundle = work / "bundle-v2"
    shutil.copytree(SHIPPED, bundle, ignore=shutil.ignore_patterns("training"))
    for index in [bundle / "bundle.json", *bundle.glob("detector/*/model.json")]:
        fields = json.loads(index.read_text())
        index.write_text(json.dumps({**fields, "version": NEW_VERSION}, indent=2))
    return bundle


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Postgres() as postgres:
        postgres.create_database("ota_e2e")
        database = DatabaseSettings(url=postgres.url("ota_e2e"))
        upgrade(database)
        broker = Broker(tmp_path / "broker").start()
        # An open broker gives devices no password: the repository is open too (a lab).
        settings = repo_settings(database, tmp_path / "keys", device_auth="none").model_copy(
            update={
                "broker": BrokerSettings(url=broker.url),
                "enrolment": EnrolmentSettings(broker_public_url=broker.url),
                "ingest": IngestSettings(batch_size=20, batch_interval_s=0.05, metrics_port=0),
            }
        )
        engine = make_engine(database)
        keys = new_keys(tmp_path / "keys")
        initialise(engine, settings, keys, threshold=1)
        publish(engine, settings, keys, new_version(tmp_path))
        worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ota-e2e").start()
        try:
            assert worker.wait_ready(10)
            with serving(create_app(settings, engine)) as base:
                yield Stack(base, broker, engine, tmp_path)
        finally:
            worker.stop()
            engine.dispose()
            broker.stop()


def device_profile(stack: Stack, enrolled: dict[str, Any], camera_url: str) -> Path:
    """The dev-x86 profile on the shipped bundle, the broker and OTA from the enrolment."""
    work = stack.work / "device"
    work.mkdir()
    root = work / "root.json"
    root.write_text(json.dumps(enrolled["tuf_root"]))
    profile = yaml.safe_load((REPO_ROOT / "firmware_configs" / "dev-x86.yaml").read_text())
    profile.update(
        {
            "identity": {"device_id": DEVICE},
            "detector": {
                **profile["detector"],
                "backend": "onnxruntime",
                "model_dir": str(SHIPPED),
                "threads": 1,
            },
            "camera": {"source": camera_url, "kind": "stream"},
            # Each image is on screen ~2 s and the agent gets ~1-2 frames/s of CPU here.
            "reading": {**profile["reading"], "confirm_frames": 1},
            "reporting": {**profile["reporting"], "health_interval_s": 1},
            "outbox": {**profile["outbox"], "path": str(work / "outbox.sqlite3")},
            "broker": {"url": enrolled["broker_url"]},
            "api": {"enabled": False},
            "ota": {
                "enabled": True,
                "repository_url": stack.base,
                "trusted_root_file": str(root),
                "state_dir": str(work / "ota"),
                # Only the server's nudge can bring the assignment within the test.
                "check_interval_s": 3600,
                "probation_s": 4,
                # The thresholds have their own tests (tests/edge_agent/ota/test_probation.py);
                # here a 4 fps camera on a shared 2-core machine must not decide the outcome.
                "probation_min_fps_ratio": 0,
                "probation_max_p95_ratio": 100,
            },
        }
    )
    path = work / "device.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


@pytest.fixture
def agent(stack: Stack, camera: str) -> Iterator[tuple[Stack, httpx.Client]]:
    """The device enrolled through the API and its agent process running on `camera`."""
    api = httpx.Client(base_url=stack.base, headers=bearer(ADMIN), timeout=10)
    enrolled = api.post("/api/v1/devices", json={"device_id": DEVICE, "profile": "dev-x86"})
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["tuf_root"]["signed"]["_type"] == "root"
    config = device_profile(stack, enrolled.json(), camera)
    log = (stack.work / "agent.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def online() -> bool:
            assert process.poll() is None, f"the agent exited: {agent_log(stack)}"
            return bool(api.get(f"/api/v1/devices/{DEVICE}").json()["status"] == "online")

        wait_until(online, 60, "the agent online")
        # Its own first check done: an assignment made before it would be installed by that
        # check, without the nudge the tests follow (on a loaded machine it can come late).
        wait_until(
            lambda: "OTA decision:" in (stack.work / "agent.log").read_text(errors="replace"),
            60,
            "the agent's first OTA check",
        )
        yield stack, api
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        api.close()


def history(api: httpx.Client) -> list[dict[str, Any]]:
    """The device's OTA status reports, oldest first."""
    response = api.get(f"/api/v1/devices/{DEVICE}/ota-status", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))


def running_on(api: httpx.Client, version: str) -> list[str]:
    """The devices GET /api/v1/models says run `version`."""
    models = api.get("/api/v1/models").json()
    return next(m["running_on"] for m in models if m["version"] == version)


def readings_after(api: httpx.Client, since: str) -> list[dict[str, Any]]:
    """The device's readings observed after `since` (an ISO time)."""
    page = api.get("/api/v1/readings", params={"device_id": DEVICE, "since": since, "limit": 100})
    assert page.status_code == 200, page.text
    return [r for r in page.json()["items"] if r["observed_at"] > since]


def agent_log(stack: Stack) -> str:
    return (stack.work / "agent.log").read_text(errors="replace")[-4000:]


def install(stack: Stack, api: httpx.Client) -> None:
    """Assign the new version through the API and wait until the agent runs it."""
    assigned = api.post(
        f"/api/v1/models/roadsign-default/{NEW_VERSION}/assignments",
        json={"device_ids": [DEVICE], "rollback": False, "rollout_id": "e2e-wave-1"},
    )
    assert assigned.status_code == 200, assigned.text
    wait_until(
        lambda: any(r["state"] in {"active", "failed"} for r in history(api)),
        60,
        "the agent to install the assignment",
    )
    states = [r["state"] for r in history(api)]
    assert states[: len(HAPPY_PATH)] == HAPPY_PATH, (states, history(api), agent_log(stack))


@pytest.mark.slow
def test_an_assigned_version_goes_through_every_state_to_active_and_the_server_sees_it_run(
    agent: tuple[Stack, httpx.Client],
) -> None:
    stack, api = agent
    assert running_on(api, NEW_VERSION) == []
    wait_until(lambda: readings_after(api, "2000"), 60, "a reading on the shipped model")
    assert {r["model_version"] for r in readings_after(api, "2000")} == {SHIPPED_VERSION}
    install(stack, api)
    reports = history(api)
    assert {r["model_version"] for r in reports} == {NEW_VERSION}
    assert len({r["command_id"] for r in reports}) == 1  # one assignment, one command id
    wait_until(
        lambda: "probation_passed" in [r["state"] for r in history(api)],
        30,
        "the probation to pass",
    )
    # The health reports now name the new detector: the models API shows where it runs.
    wait_until(lambda: running_on(api, NEW_VERSION) == [DEVICE], 30, "the device on the new model")
    device = api.get(f"/api/v1/devices/{DEVICE}").json()
    assert device["model_version"] == NEW_VERSION


@pytest.mark.slow
def test_a_command_naming_an_unassigned_model_fails_with_a_reason_and_changes_nothing(
    agent: tuple[Stack, httpx.Client],
) -> None:
    stack, api = agent
    install(stack, api)
    command_id = uuid.uuid4()
    command = OtaCommand(
        device_id=DEVICE,
        seq=1,
        timestamp=datetime.now(UTC),
        command_id=command_id,
        action=OtaAction.INSTALL,
        model_version="never-assigned-9",
        target_path="models/roadsign-default/never-assigned-9/bundle.tar",
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", stack.broker.port)
    client.loop_start()
    try:
        client.publish(
            device_topic(DEVICE, MessageKind.OTA_COMMAND), encode(command), qos=1
        ).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()

    def outcome() -> dict[str, Any] | None:
        done = [
            r
            for r in history(api)
            if r["command_id"] == str(command_id) and r["state"] in {"failed", "active"}
        ]
        return done[-1] if done else None

    wait_until(lambda: outcome() is not None, 30, "the agent's answer to the command")
    answer = outcome()
    assert answer is not None
    assert answer["state"] == "failed", (answer, agent_log(stack))
    # The nudge is only a hint: the signed assignment decides, and the detail says so.
    assert "never-assigned-9" in answer["detail"], answer
    assert "signed assignment names" in answer["detail"], answer
    assert answer["running_model_version"] == NEW_VERSION
    wait_until(lambda: running_on(api, NEW_VERSION) == [DEVICE], 30, "the device still on it")
