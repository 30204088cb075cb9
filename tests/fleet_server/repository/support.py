"""What the TUF repository tests share: key folders, small model bundles, an initialised
repository in the test database, and a real ngclient Updater against served routes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine
from tuf.ngclient.updater import Updater

from edge_agent.ota.client import HttpFetcher, basic_authorization
from fleet_server import crud
from fleet_server.credentials import mosquitto_hash
from fleet_server.db import session_scope
from fleet_server.models import DeviceCreate
from fleet_server.repository import service
from fleet_server.repository.keys import generate_signer, write_key_file
from fleet_server.repository.tuf_api import CryptoSigner
from fleet_server.settings import DatabaseSettings, RepositorySettings, ServerSettings
from tests.fleet_server.auth_support import ADMIN, settings_for

ONLINE_PASSPHRASE = "online-key-passphrase-for-tests"
OFFLINE_PASSPHRASE = "offline-key-passphrase-for-tests"


@dataclass(frozen=True)
class Keys:
    """The signers of a test repository."""

    roots: list[CryptoSigner]
    targets: list[CryptoSigner]
    online: CryptoSigner


def repo_settings(database: DatabaseSettings, key_dir: Path, **tuf: object) -> ServerSettings:
    """Development settings on `database` whose online key file is `key_dir`/online.pem."""
    settings = settings_for(database)
    fields: dict[str, object] = {
        "online_key_file": key_dir / "online.pem",
        "online_key_passphrase": SecretStr(ONLINE_PASSPHRASE),
        **tuf,
    }
    return settings.model_copy(update={"tuf": RepositorySettings.model_validate(fields)})


def new_keys(key_dir: Path, *, roots: int = 2) -> Keys:
    """Fresh signers; the online one written where `repo_settings` looks for it."""
    key_dir.mkdir(parents=True, exist_ok=True)
    keys = Keys(
        roots=[generate_signer() for _ in range(roots)],
        targets=[generate_signer()],
        online=generate_signer(),
    )
    write_key_file(keys.online, key_dir / "online.pem", ONLINE_PASSPHRASE)
    return keys


def initialise(engine: Engine, settings: ServerSettings, keys: Keys, *, threshold: int) -> None:
    """Root v1 and the rest, stored."""
    with session_scope(engine) as session:
        service.initialise(
            session,
            settings,
            root_keys=keys.roots,
            root_threshold=threshold,
            targets_keys=keys.targets,
            online=keys.online,
        )


def initialised_repository(
    database: DatabaseSettings, engine: Engine, key_dir: Path, *, threshold: int = 2, **tuf: object
) -> tuple[ServerSettings, Keys]:
    """Settings (`tuf` fields applied) and keys of a repository initialised in the test
    database, with a root threshold of `threshold` of two root keys."""
    settings = repo_settings(database, key_dir, **tuf)
    keys = new_keys(key_dir)
    initialise(engine, settings, keys, threshold=threshold)
    return settings, keys


def write_artifact(folder: Path, artifact: str, data: bytes, **sidecar: object) -> None:
    """An artifact and its sidecar (sha256 of `data`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifact).write_bytes(data)
    fields = {"artifact": artifact, "sha256": hashlib.sha256(data).hexdigest(), **sidecar}
    (folder / artifact).with_suffix(".json").write_text(json.dumps(fields))


def make_bundle(root: Path, *, name: str = "roadsign-test", version: str = "1.0.0") -> Path:
    """A small bundle folder as training writes one: index, detector, classifier, a checkpoint
    that is not shipped."""
    write_artifact(
        root / "detector" / "onnx_int8",
        "model.onnx",
        f"detector {version}".encode() * 1000,
        input_size=416,
        source_run_id="run-" + version,
        metrics={"map50": 0.7},
    )
    write_artifact(root / "classifier", "classifier.onnx", b"classifier weights")
    (root / "training").mkdir(parents=True, exist_ok=True)
    (root / "training" / "detector.pt").write_bytes(b"torch checkpoint, never shipped")
    index = {
        "name": name,
        "version": version,
        "detector": {"onnx_int8": "detector/onnx_int8/model.onnx"},
        "classifier": "classifier/classifier.onnx",
    }
    (root / "bundle.json").write_text(json.dumps(index))
    return root


def publish(engine: Engine, settings: ServerSettings, keys: Keys, bundle: Path) -> str:
    """Publish `bundle`; its target path."""
    with session_scope(engine) as session:
        model = service.publish_bundle(
            session,
            settings,
            bundle_dir=bundle,
            targets_keys=keys.targets,
            online=keys.online,
            min_agent_version="0.1.0",
        )
        return model.target_path


def enrol(engine: Engine, *device_ids: str) -> dict[str, str]:
    """Devices in the registry, each with a broker password; id -> its `device_login` header."""
    logins = {}
    with session_scope(engine) as session:
        for device_id in device_ids:
            password = f"password-of-{device_id}"
            device = crud.create_device(session, device=DeviceCreate(device_id=device_id))
            device.broker_password_hash = mosquitto_hash(password)
            logins[device_id] = basic_authorization(device_id, password)
    return logins


def stored_root(engine: Engine, version: int = 1) -> bytes:
    """The stored bytes of root `version`."""
    with session_scope(engine) as session:
        row = crud.role_metadata(session, role="root", version=version)
        assert row is not None
        return row.content


def updater(
    base_url: str, work: Path, bootstrap: bytes, *, authorization: str = f"Bearer {ADMIN}"
) -> Updater:
    """A real ngclient Updater against the served repository, trusting `bootstrap`, sending
    `authorization` (a device's login; the test admin token unless given) as the device's
    fetcher does."""
    (work / "metadata").mkdir(parents=True, exist_ok=True)
    (work / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(work / "metadata"),
        metadata_base_url=f"{base_url}/tuf/metadata/",
        target_dir=str(work / "targets"),
        target_base_url=f"{base_url}/tuf/targets/",
        bootstrap=bootstrap,
        fetcher=HttpFetcher(timeout_s=10, authorization=authorization),
    )
