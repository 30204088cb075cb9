"""The repository's operations on the real PostgreSQL, checked with a real ngclient where the
question is what a device accepts: a root under its threshold is refused, a re-signed timestamp
is taken, a bad bundle is refused and nothing of it is stored, replicas take turns signing."""

from __future__ import annotations

import copy
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session
from tuf.api.exceptions import ExpiredMetadataError, UnsignedMetadataError

from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.exceptions import BundleError, RepositoryError
from fleet_server.models import utcnow
from fleet_server.repository import builder, service, storage
from fleet_server.repository.tuf_api import Metadata
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.fleet_server.repository.support import (
    Keys,
    enrol,
    initialise,
    initialised_repository,
    make_bundle,
    new_keys,
    publish,
    repo_settings,
    stored_root,
    updater,
)
from tests.serving import serving
from tests.waiting import wait_until


def _next_version(metadata: Metadata[Any], expires: datetime) -> Metadata[Any]:
    """A copy one version on, expiring at `expires`, unsigned (for forging by hand)."""
    new = copy.deepcopy(metadata)
    new.signed.version += 1
    new.signed.expires = expires
    return new


@pytest.fixture
def repo(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> tuple[ServerSettings, Keys]:
    """An initialised repository, root threshold 2 of 2."""
    return initialised_repository(database, engine, tmp_path / "keys")


def test_a_root_signed_by_one_of_two_root_keys_is_refused_by_a_device(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    with session_scope(engine) as session:
        state = storage.load_state(session)
    forged = _next_version(state.root, utcnow() + timedelta(days=30))
    builder.sign(forged, keys.roots[:1])  # what a thief of one root key could make
    with session_scope(engine) as session:
        storage.store(session, [("root", forged)])
    with serving(create_app(settings, engine)) as base:
        client = updater(base, tmp_path / "device", stored_root(engine, 1))
        with pytest.raises(UnsignedMetadataError):
            client.refresh()


def test_a_due_timestamp_is_re_signed_once_and_a_device_takes_it(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, _ = repo
    now = utcnow()
    with session_scope(engine) as session:
        assert service.refresh_timestamp_if_due(session, settings, now=now) == []
    later = now + timedelta(seconds=settings.tuf.timestamp_expiry_s * 0.9)
    with session_scope(engine) as session:
        assert service.refresh_timestamp_if_due(session, settings, now=later) == ["timestamp"]
    with session_scope(engine) as session:
        assert service.refresh_timestamp_if_due(session, settings, now=later) == []
        timestamp = crud.latest_role_metadata(session, role="timestamp")
    assert timestamp is not None
    assert timestamp.version == 2
    assert timestamp.expires > now + timedelta(seconds=settings.tuf.timestamp_expiry_s)
    with serving(create_app(settings, engine)) as base:
        client = updater(base, tmp_path / "device", stored_root(engine))
        client.refresh()
    trusted = json.loads((tmp_path / "device" / "metadata" / "timestamp.json").read_bytes())
    assert trusted["signed"]["version"] == 2


def _expire_timestamp(engine: Engine, keys: Keys) -> None:
    with session_scope(engine) as session:
        state = storage.load_state(session)
    stale = _next_version(state.timestamp, utcnow() - timedelta(seconds=60))
    builder.sign(stale, [keys.online])
    with session_scope(engine) as session:
        storage.store(session, [("timestamp", stale)])


def test_a_device_refuses_an_expired_timestamp_that_no_server_re_signs(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    _expire_timestamp(engine, keys)
    unsigning = settings.model_copy(
        update={"tuf": settings.tuf.model_copy(update={"online_key_file": None})}
    )
    with serving(create_app(unsigning, engine)) as base:
        client = updater(base, tmp_path / "device", stored_root(engine))
        with pytest.raises(ExpiredMetadataError):
            client.refresh()


def test_an_api_process_with_the_online_key_re_signs_an_expired_timestamp_by_itself(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    _expire_timestamp(engine, keys)

    def fresh_timestamp() -> bool:
        with session_scope(engine) as session:
            row = crud.latest_role_metadata(session, role="timestamp")
            return row is not None and row.version == 3 and row.expires > utcnow()

    with serving(create_app(settings, engine)) as base:
        wait_until(fresh_timestamp, 20, "the API's refresher to re-sign the timestamp")
        client = updater(base, tmp_path / "device", stored_root(engine))
        client.refresh()  # accepted: fresh again


def test_a_bundle_whose_artifact_differs_from_its_sidecar_is_refused_and_nothing_stored(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "detector" / "onnx_int8" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="does not match the sha256"):
        publish(engine, settings, keys, bundle)
    with session_scope(engine) as session:
        assert crud.list_model_versions(session) == []
        assert storage.load_state(session).targets.signed.version == 1


def test_a_bundle_larger_than_the_limit_is_refused_before_it_is_read(
    database: DatabaseSettings, engine: Engine, tmp_path: Path
) -> None:
    settings = repo_settings(database, tmp_path / "keys", max_bundle_bytes=1024)
    keys = new_keys(tmp_path / "keys")
    initialise(engine, settings, keys, threshold=1)
    with pytest.raises(BundleError, match="at most 1024"):
        publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))


def test_releases_count_up_and_a_version_is_published_once(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    publish(engine, settings, keys, make_bundle(tmp_path / "a", version="1.0.0"))
    publish(engine, settings, keys, make_bundle(tmp_path / "b", version="1.1.0"))
    with pytest.raises(BundleError, match="already published"):
        publish(engine, settings, keys, make_bundle(tmp_path / "c", version="1.1.0"))
    with session_scope(engine) as session:
        models = crud.list_model_versions(session)
        targets = storage.load_state(session).targets.signed.targets
    assert [(m.version, m.release) for m in models] == [("1.1.0", 2), ("1.0.0", 1)]
    signed = targets["models/roadsign-test/1.1.0/bundle.tar"].custom["roadsign"]
    assert signed["release"] == 2
    assert signed["metrics"] == {"map50": "0.7"}  # canonical JSON signs no floats
    assert models[0].lineage["metrics"] == {"map50": 0.7}


def test_an_assignment_names_the_model_target_exactly_and_unknown_targets_are_refused(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    path = publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
    enrol(engine, "cam-1")
    with session_scope(engine) as session:
        service.assign(session, settings, ["cam-1", "cam-1"], path, True, None)
    with session_scope(engine) as session:
        state = storage.load_state(session)
    model = state.targets.signed.targets[path]
    assignment = state.bins[state.bin_of("cam-1")].signed.targets["assignments/cam-1"]
    assert (assignment.length, assignment.hashes) == (model.length, model.hashes)
    assert assignment.custom["roadsign"] == {
        "kind": "assignment",
        "device_id": "cam-1",
        "target": path,
        "version": "1.0.0",
        "release": 1,
        "rollback": True,
        "rollout_id": None,
    }
    with session_scope(engine) as session, pytest.raises(RepositoryError, match="not a published"):
        service.assign(session, settings, ["cam-1"], "models/x/9/bundle.tar", False, None)


def test_two_writers_take_turns_on_the_advisory_lock(
    repo: tuple[ServerSettings, Keys], engine: Engine
) -> None:
    settings, _ = repo
    later = utcnow() + timedelta(seconds=settings.tuf.timestamp_expiry_s * 0.9)
    done: list[list[str]] = []
    with Session(engine) as holder:
        crud.lock_repository(holder)
        second = threading.Thread(
            target=lambda: done.append(_refresh(engine, settings, later)), daemon=True
        )
        second.start()

        def waiting() -> bool:
            with engine.connect() as connection:
                query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                return bool(connection.execute(text(query)).scalar_one())

        wait_until(waiting, 20, "the second writer to wait for the lock")
        assert done == []
        holder.commit()
    second.join(20)
    assert done == [["timestamp"]]


def _refresh(engine: Engine, settings: ServerSettings, now: datetime) -> list[str]:
    with session_scope(engine) as session:
        return service.refresh_timestamp_if_due(session, settings, now=now)


def test_a_cleared_assignment_is_gone_for_the_device(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    path = publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
    enrol(engine, "cam-1")
    with session_scope(engine) as session:
        service.assign(session, settings, ["cam-1"], path, False, None)
    with session_scope(engine) as session:
        service.clear_assignments(session, settings, ["cam-1"])
    with serving(create_app(settings, engine)) as base:
        client = updater(base, tmp_path / "device", stored_root(engine))
        assert client.get_targetinfo("assignments/cam-1") is None
