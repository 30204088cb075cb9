"""The rollouts API on the real PostgreSQL and TUF repository: requests are resolved or refused
with a clear 4xx, commands go through the engine (409 when refused) and sign what they must,
and a hand-made assignment nudges the devices it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import col

from fleet_protocol.messages import OtaAction
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.models import Device
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import ADMIN, bearer
from tests.fleet_server.rollouts.driver_support import (
    DEVICES,
    NEW_VERSION,
    OLD_VERSION,
    Fleet,
    RecordingPublisher,
    make_fleet,
    signed_assignments,
)

HEADERS = bearer(ADMIN)


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Fleet:
    return make_fleet(database, engine, tmp_path)


@pytest.fixture
def api(fleet: Fleet) -> Iterator[tuple[TestClient, RecordingPublisher]]:
    publisher = RecordingPublisher()
    app = create_app(fleet.settings, fleet.engine, nudge_publisher=publisher)
    with TestClient(app) as client:
        yield client, publisher


def body(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "rollout_id": "r-api",
        "model_name": "roadsign-test",
        "model_version": NEW_VERSION,
        "selector": {"tags": ["depot-a"]},
        "stages": [{"count": 2, "soak_s": 60}, {"percent": 100, "soak_s": 60}],
    }
    fields.update(overrides)
    return fields


def test_a_created_rollout_assigns_and_nudges_its_first_stage_and_shows_it(
    api: tuple[TestClient, RecordingPublisher], fleet: Fleet
) -> None:
    client, publisher = api
    created = client.post("/api/v1/rollouts", json=body(), headers=HEADERS)
    assert created.status_code == 201, created.text
    detail = created.json()
    assert detail["status"] == "running"
    assert detail["devices"] == len(DEVICES)
    assert detail["progress"]["desired_new"] == 2
    first = {d["device_id"] for d in detail["device_states"] if d["desired"] == "new"}
    assert set(signed_assignments(fleet.engine)) == first
    assert {c.device_id for c in publisher.sent} == first
    assert all(d["previous_version"] == OLD_VERSION for d in detail["device_states"])
    listed = client.get("/api/v1/rollouts", headers=HEADERS).json()
    assert [r["rollout_id"] for r in listed] == ["r-api"]
    kinds = [e["kind"] for e in client.get("/api/v1/rollouts/r-api/events", headers=HEADERS).json()]
    assert kinds[:2] == ["started", "stage_started"]


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"model_version": "9.9.9"}, 422, "no published model version roadsign-test 9.9.9"),
        ({"selector": {"tags": ["nowhere"]}}, 422, "matches no enrolled device"),
        ({"selector": {}}, 422, "the selector picks nothing"),
        ({"selector": {"device_ids": ["ghost-1"]}}, 422, "not enrolled: ghost-1"),
        ({"model_version": OLD_VERSION}, 422, "already run 1.0.0 or a newer release"),
    ],
)
def test_a_bad_rollout_request_is_refused_naming_the_problem(
    api: tuple[TestClient, RecordingPublisher],
    fleet: Fleet,
    overrides: dict[str, Any],
    code: int,
    words: str,
) -> None:
    client, _ = api
    answer = client.post("/api/v1/rollouts", json=body(**overrides), headers=HEADERS)
    assert answer.status_code == code
    assert words in answer.json()["detail"]
    assert client.get("/api/v1/rollouts", headers=HEADERS).json() == []
    assert signed_assignments(fleet.engine) == {}


def test_a_second_rollout_over_the_same_devices_is_refused(
    api: tuple[TestClient, RecordingPublisher],
) -> None:
    client, _ = api
    assert client.post("/api/v1/rollouts", json=body(), headers=HEADERS).status_code == 201
    again = client.post(
        "/api/v1/rollouts",
        json=body(rollout_id="r-other", selector={"device_ids": [DEVICES[3]]}),
        headers=HEADERS,
    )
    assert again.status_code == 409
    assert "rollout 'r-api' (running) already covers 1 of these devices" in again.json()["detail"]


def test_pause_resume_abort_and_rollback_go_through_the_engine(
    api: tuple[TestClient, RecordingPublisher], fleet: Fleet
) -> None:
    client, publisher = api
    client.post("/api/v1/rollouts", json=body(), headers=HEADERS)
    paused = client.post("/api/v1/rollouts/r-api/pause", headers=HEADERS)
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["pause_reason"] == "paused by an operator"
    assert client.post("/api/v1/rollouts/r-api/resume", headers=HEADERS).json()["status"] == (
        "running"
    )
    rolled = client.post("/api/v1/rollouts/r-api/rollback", headers=HEADERS)
    assert rolled.json()["status"] == "rolled_back"
    moved = {d["device_id"] for d in rolled.json()["device_states"] if d["desired"] == "previous"}
    assert len(moved) == 2
    for device_id, custom in signed_assignments(fleet.engine).items():
        assert device_id in moved
        assert custom["rollback"] is True
        assert custom["target"] == fleet.old_target
    assert {c.device_id for c in publisher.sent if c.action is OtaAction.ROLLBACK} == moved
    refused = client.post("/api/v1/rollouts/r-api/resume", headers=HEADERS)
    assert refused.status_code == 409
    assert "rolled_back: it cannot resume" in refused.json()["detail"]
    assert client.post("/api/v1/rollouts/r-api/abort", headers=HEADERS).status_code == 409
    assert client.post("/api/v1/rollouts/r-api/start", headers=HEADERS).status_code == 409
    assert client.post("/api/v1/rollouts/r-api/bogus", headers=HEADERS).status_code == 422
    assert client.post("/api/v1/rollouts/nope/pause", headers=HEADERS).status_code == 404


def test_abort_keeps_assignments_and_commands_need_an_admin(
    api: tuple[TestClient, RecordingPublisher], fleet: Fleet
) -> None:
    client, _ = api
    client.post("/api/v1/rollouts", json=body(), headers=HEADERS)
    assert client.post("/api/v1/rollouts/r-api/pause").status_code == 401
    aborted = client.post("/api/v1/rollouts/r-api/abort", headers=HEADERS)
    assert aborted.json()["status"] == "aborted"
    assert all(not c["rollback"] for c in signed_assignments(fleet.engine).values())


def test_a_hand_made_assignment_nudges_the_devices_it_signed(
    api: tuple[TestClient, RecordingPublisher],
) -> None:
    client, publisher = api
    answer = client.post(
        f"/api/v1/models/roadsign-test/{NEW_VERSION}/assignments",
        json={"device_ids": DEVICES[:3]},
        headers=HEADERS,
    )
    assert answer.status_code == 200, answer.text
    assert [c.device_id for c in publisher.sent] == DEVICES[:3]
    assert all(c.model_version == NEW_VERSION for c in publisher.sent)
    assert all(c.action is OtaAction.INSTALL for c in publisher.sent)


def test_a_draft_moves_nothing_until_started(
    api: tuple[TestClient, RecordingPublisher], fleet: Fleet
) -> None:
    client, publisher = api
    draft = client.post("/api/v1/rollouts", json=body(start=False), headers=HEADERS)
    assert draft.json()["status"] == "draft"
    assert signed_assignments(fleet.engine) == {}
    started = client.post("/api/v1/rollouts/r-api/start", headers=HEADERS)
    assert started.json()["status"] == "running"
    assert len(signed_assignments(fleet.engine)) == 2
    assert len(publisher.sent) == 2


def test_a_device_on_an_unpublished_version_rolls_back_to_the_shipped_bundle_by_clearing(
    api: tuple[TestClient, RecordingPublisher], fleet: Fleet
) -> None:
    client, _ = api
    with session_scope(fleet.engine) as session:
        session.execute(
            update(Device).where(col(Device.device_id) == DEVICES[0]).values(model_version=None)
        )
    created = client.post(
        "/api/v1/rollouts",
        json=body(selector={"device_ids": [DEVICES[0]]}, stages=[{"percent": 100}]),
        headers=HEADERS,
    ).json()
    assert created["device_states"][0]["previous_version"] == "release-0"
    assert set(signed_assignments(fleet.engine)) == {DEVICES[0]}
    # The shipped bundle is no target of the repository: a rollback can only clear the
    # assignment (the device keeps what it runs; see the driver).
    rolled = client.post("/api/v1/rollouts/r-api/rollback", headers=HEADERS)
    assert rolled.json()["status"] == "rolled_back"
    assert signed_assignments(fleet.engine) == {}
