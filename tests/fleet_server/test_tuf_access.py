"""Who may read the TUF repository: an enrolled device with its broker password (only its own
director bin), or an API token; anyone else gets 401 before a byte of metadata or model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from edge_agent.ota.client import basic_authorization
from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.credentials import mosquitto_hash
from fleet_server.db import session_scope
from fleet_server.repository import storage
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.fleet_server.auth_support import ADMIN, bearer
from tests.fleet_server.repository.support import (
    Keys,
    enrol,
    initialised_repository,
    make_bundle,
    publish,
)
from tests.serving import serving

TIMESTAMP = "/tuf/metadata/timestamp.json"


@pytest.fixture
def repo(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> tuple[ServerSettings, Keys]:
    """An initialised repository that admits devices by their broker password (the default)."""
    return initialised_repository(database, engine, tmp_path / "keys")


def _target_url(engine: Engine, target_path: str) -> str:
    with session_scope(engine) as session:
        head = crud.target_head(session, path=target_path)
    assert head is not None
    folder, name = target_path.rsplit("/", 1)
    return f"/tuf/targets/{folder}/{head[1]}.{name}"


def _bin_of(engine: Engine, device_id: str) -> str:
    with session_scope(engine) as session:
        return storage.load_state(session).bin_of(device_id)


def test_without_credentials_no_metadata_and_no_model_is_served(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    model = _target_url(engine, publish(engine, settings, keys, make_bundle(tmp_path / "b")))
    with serving(create_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        for path in (
            TIMESTAMP,
            "/tuf/metadata/1.root.json",
            "/tuf/metadata/1.director.json",
            model,
        ):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert 'Basic realm="roadsign-tuf"' in refused.headers["www-authenticate"]
            assert b'"signed"' not in refused.content
        refused = http.get(model)
        assert refused.status_code == 401
        assert len(refused.content) < 300  # the message, not the model
        assert http.get(TIMESTAMP, headers={"Authorization": "Basic"}).status_code == 401
        assert http.get(TIMESTAMP, headers={"Authorization": "Digest x"}).status_code == 401
        assert http.get(TIMESTAMP, headers=bearer("rsf_not-a-token")).status_code == 401
        assert http.get(model, headers=bearer(ADMIN)).status_code == 200  # an API token reads


def test_a_device_reads_with_its_broker_password_but_only_its_own_director_bin(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    model = _target_url(engine, publish(engine, settings, keys, make_bundle(tmp_path / "b")))
    devices = [f"cam-{n}" for n in range(40)]
    logins = enrol(engine, *devices)
    own = _bin_of(engine, "cam-0")
    other = next(_bin_of(engine, d) for d in devices if _bin_of(engine, d) != own)
    device = {"Authorization": logins["cam-0"]}
    with serving(create_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        for path in (TIMESTAMP, "/tuf/metadata/1.snapshot.json", f"/tuf/metadata/1.{own}.json"):
            assert http.get(path, headers=device).status_code == 200, path
        assert http.get(model, headers=device).status_code == 200  # any model of the fleet
        refused = http.get(f"/tuf/metadata/1.{other}.json", headers=device)
        assert refused.status_code == 403
        assert "its own assignment" in refused.json()["detail"]
        # a token sees every bin (the dashboard, an operator)
        assert http.get(f"/tuf/metadata/1.{other}.json", headers=bearer(ADMIN)).status_code == 200


def test_a_wrong_password_an_unknown_device_and_a_decommissioned_one_are_refused_alike(
    repo: tuple[ServerSettings, Keys], engine: Engine
) -> None:
    settings, _ = repo
    logins = enrol(engine, "cam-1", "cam-2")
    with serving(create_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        assert http.get(TIMESTAMP, headers={"Authorization": logins["cam-2"]}).status_code == 200
        with session_scope(engine) as session:
            crud.decommission(session, device_id="cam-2")
        answers = [
            http.get(TIMESTAMP, headers={"Authorization": login})
            for login in (
                basic_authorization("cam-1", "not-its-password"),
                basic_authorization("cam-9", "password-of-cam-9"),  # never enrolled
                logins["cam-2"],  # right password, remembered, but decommissioned now
                basic_authorization("cam-1", logins["cam-2"]),
            )
        ]
        assert [a.status_code for a in answers] == [401] * 4
        assert len({a.text for a in answers}) == 1  # nothing tells one case from another
        assert http.get(TIMESTAMP, headers={"Authorization": logins["cam-1"]}).status_code == 200


def test_a_reset_password_refuses_the_old_one_at_once_although_it_was_remembered(
    repo: tuple[ServerSettings, Keys], engine: Engine
) -> None:
    settings, _ = repo
    old = enrol(engine, "cam-1")["cam-1"]
    with serving(create_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        assert http.get(TIMESTAMP, headers={"Authorization": old}).status_code == 200
        with session_scope(engine) as session:
            device = crud.get_device(session, device_id="cam-1")
            assert device is not None
            device.broker_password_hash = mosquitto_hash("a-new-password")
        assert http.get(TIMESTAMP, headers={"Authorization": old}).status_code == 401
        new = basic_authorization("cam-1", "a-new-password")
        assert http.get(TIMESTAMP, headers={"Authorization": new}).status_code == 200


def test_an_open_repository_serves_anyone_when_configured_so(
    database: DatabaseSettings, engine: Engine, tmp_path: Path
) -> None:
    settings, _ = initialised_repository(database, engine, tmp_path / "keys", device_auth="none")
    with serving(create_app(settings, engine)) as base:
        assert httpx.get(base + TIMESTAMP).status_code == 200
