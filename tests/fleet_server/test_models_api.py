"""/api/v1/models: published versions with lineage and where they run; signing assignments.

Also the enrolment bundle: a new device gets the repository's current root as its trust anchor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.models import Device
from fleet_server.repository import storage
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import ADMIN, bearer, issue
from tests.fleet_server.repository.support import (
    enrol,
    initialise,
    make_bundle,
    new_keys,
    publish,
    repo_settings,
    stored_root,
)


@pytest.fixture
def api(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    """The API on an initialised repository with versions 1.0.0 and 1.1.0 published and
    devices cam-1 (running 1.0.0) and cam-2 enrolled."""
    settings = repo_settings(database, tmp_path / "keys")
    keys = new_keys(tmp_path / "keys")
    initialise(engine, settings, keys, threshold=1)
    publish(engine, settings, keys, make_bundle(tmp_path / "a", version="1.0.0"))
    publish(engine, settings, keys, make_bundle(tmp_path / "b", version="1.1.0"))
    enrol(engine, "cam-1", "cam-2")
    with session_scope(engine) as session:
        session.execute(
            update(Device).where(Device.device_id == "cam-1").values(model_version="1.0.0")  # type: ignore[arg-type]
        )
    with TestClient(create_app(settings, engine)) as client:
        yield client


def test_models_lists_versions_newest_first_with_lineage_and_the_devices_running_them(
    api: TestClient,
) -> None:
    reader = str(issue(api, role="reader")["token"])
    response = api.get("/api/v1/models", headers=bearer(reader))
    assert response.status_code == 200
    models = response.json()
    assert [(m["version"], m["release"]) for m in models] == [("1.1.0", 2), ("1.0.0", 1)]
    assert models[1]["running_on"] == ["cam-1"]
    assert models[0]["running_on"] == []
    lineage = models[1]["lineage"]
    assert lineage["mlflow_run_id"] == "run-1.0.0"
    assert lineage["formats"] == ["onnx_int8"]
    assert lineage["metrics"] == {"map50": 0.7}
    assert models[1]["target_path"] == "models/roadsign-test/1.0.0/bundle.tar"
    assert api.get("/api/v1/models").status_code == 401


def test_an_admin_assigns_a_version_and_the_director_bin_carries_it(
    api: TestClient, engine: Engine
) -> None:
    body = {"device_ids": ["cam-1", "cam-2"], "rollback": False, "rollout_id": "r-1"}
    response = api.post(
        "/api/v1/models/roadsign-test/1.1.0/assignments", json=body, headers=bearer(ADMIN)
    )
    assert response.status_code == 200, response.text
    signed = response.json()
    assert signed["device_ids"] == ["cam-1", "cam-2"]
    with session_scope(engine) as session:
        state = storage.load_state(session)
    assert signed["snapshot_version"] == state.snapshot.signed.version
    for device_id in ("cam-1", "cam-2"):
        assignment = state.bins[state.bin_of(device_id)].signed.targets[f"assignments/{device_id}"]
        assert assignment.custom["roadsign"]["version"] == "1.1.0"
        assert assignment.custom["roadsign"]["rollout_id"] == "r-1"
    reader = str(issue(api, role="reader")["token"])
    refused = api.post(
        "/api/v1/models/roadsign-test/1.1.0/assignments", json=body, headers=bearer(reader)
    )
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("roadsign-test/9.9.9", {"device_ids": ["cam-1"]}, 404),
        ("roadsign-test/1.1.0", {"device_ids": ["cam-9"]}, 404),
        ("roadsign-test/1.1.0", {"device_ids": ["a/b"]}, 422),
        ("roadsign-test/1.1.0", {"device_ids": []}, 422),
        ("roadsign-test/1.0.0", {"device_ids": ["cam-1"], "rollback": True}, 200),
    ],
    ids=["unknown version", "device not enrolled", "bad device id", "no devices", "a good one"],
)
def test_bad_assignments_are_refused_and_sign_nothing(
    api: TestClient, engine: Engine, path: str, body: dict[str, object], code: int
) -> None:
    with session_scope(engine) as session:
        before = storage.load_state(session).snapshot.signed.version
    response = api.post(f"/api/v1/models/{path}/assignments", json=body, headers=bearer(ADMIN))
    assert response.status_code == code, response.text
    with session_scope(engine) as session:
        after = storage.load_state(session).snapshot.signed.version
    assert after == (before + 1 if code == 200 else before)


def test_enrolment_hands_a_device_the_repositorys_current_root(
    api: TestClient, engine: Engine
) -> None:
    response = api.post("/api/v1/devices", json={"device_id": "cam-3"}, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    assert response.json()["tuf_root"] == json.loads(stored_root(engine))


def test_enrolment_without_a_repository_hands_no_root(client: TestClient) -> None:
    response = client.post("/api/v1/devices", json={"device_id": "cam-4"}, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    assert response.json()["tuf_root"] is None


def test_an_api_without_the_online_key_answers_503_and_signs_nothing(
    database: DatabaseSettings, engine: Engine, tmp_path: Path
) -> None:
    settings = repo_settings(database, tmp_path / "keys")
    keys = new_keys(tmp_path / "keys")
    initialise(engine, settings, keys, threshold=1)
    publish(engine, settings, keys, make_bundle(tmp_path / "a"))
    enrol(engine, "cam-1")
    unsigning = settings.model_copy(
        update={"tuf": settings.tuf.model_copy(update={"online_key_file": None})}
    )
    with TestClient(create_app(unsigning, engine)) as client:
        response = client.post(
            "/api/v1/models/roadsign-test/1.0.0/assignments",
            json={"device_ids": ["cam-1"]},
            headers=bearer(ADMIN),
        )
    assert response.status_code == 503
    assert "tuf.online_key_file is not set" in response.json()["detail"]
    with session_scope(engine) as session:
        assert storage.load_state(session).snapshot.signed.version == 2  # init 1, publish 2
