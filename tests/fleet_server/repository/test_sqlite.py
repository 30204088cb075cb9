"""The repository on SQLite (the demo's store): the same operations, no advisory lock, and
targets still stream in slices and resume from a byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from fleet_server.api.main import create_app
from fleet_server.db import make_engine, session_scope
from fleet_server.migrate import upgrade
from fleet_server.repository import service, storage
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.repository.support import (
    enrol,
    initialise,
    make_bundle,
    new_keys,
    publish,
    repo_settings,
)


def test_publish_assign_and_a_resumed_download_work_on_sqlite(tmp_path: Path) -> None:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    upgrade(database)
    engine = make_engine(database)
    try:
        settings = repo_settings(database, tmp_path / "keys")
        keys = new_keys(tmp_path / "keys")
        initialise(engine, settings, keys, threshold=1)
        path = publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
        logins = enrol(engine, "cam-1")
        with session_scope(engine) as session:
            service.assign(session, settings, ["cam-1"], path, False, None)
        with session_scope(engine) as session:
            state = storage.load_state(session)
        model = state.targets.signed.targets[path]
        assert "assignments/cam-1" in state.bins[state.bin_of("cam-1")].signed.targets
        folder, name = path.rsplit("/", 1)
        url = f"/tuf/targets/{folder}/{model.hashes['sha256']}.{name}"
        with TestClient(create_app(settings, engine)) as client:
            device = {"Authorization": logins["cam-1"]}  # the device, as it downloads
            whole = client.get(url, headers=device)
            rest = client.get(url, headers={**device, "Range": "bytes=100-"})
        assert hashlib.sha256(whole.content).hexdigest() == model.hashes["sha256"]
        assert rest.status_code == 206
        assert rest.content == whole.content[100:]
    finally:
        engine.dispose()
