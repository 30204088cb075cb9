"""``roadsign-fleet keys`` and ``models publish`` end to end, checked with a real ngclient.

keys init writes encrypted key files and initialises the repository; models publish signs a
bundle in with the offline targets key; keys rotate replaces a root key (root v2, signed by the
old threshold and the new key) or the targets key, and a device that holds only root v1 accepts
either and still verifies the model. Passphrases never come from the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.cli import main
from fleet_server.db import session_scope
from fleet_server.exceptions import RepositoryError, SigningKeyError
from fleet_server.repository import service
from fleet_server.repository.commands import PASSPHRASE_ENV, keys_init
from fleet_server.repository.keys import load_signer
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import ADMIN, bearer
from tests.fleet_server.repository.support import (
    OFFLINE_PASSPHRASE,
    ONLINE_PASSPHRASE,
    enrol,
    make_bundle,
    repo_settings,
    stored_root,
    updater,
)
from tests.serving import serving


@pytest.fixture
def config(database: DatabaseSettings, tmp_path: Path) -> Path:
    """A settings file: the test database, the online key in tmp_path/keys."""
    path = tmp_path / "fleet.yaml"
    tuf = {
        "online_key_file": str(tmp_path / "keys" / "online.pem"),
        "online_key_passphrase": ONLINE_PASSPHRASE,
    }
    path.write_text(yaml.safe_dump({"database": {"url": database.url}, "tuf": tuf}))
    return path


def _run(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def test_keys_init_writes_encrypted_key_files_and_a_root_of_threshold_two_of_three(
    config: Path, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, OFFLINE_PASSPHRASE)
    keys = tmp_path / "keys"
    assert _run(config, "keys", "init", "--dir", str(keys)) == 0
    names = sorted(p.name for p in keys.iterdir())
    assert names == [
        "online.pem",
        "public-keys.json",
        "root-1.pem",
        "root-2.pem",
        "root-3.pem",
        "targets-1.pem",
    ]
    for name in names:
        if name.endswith(".pem"):
            assert (keys / name).read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            assert (keys / name).stat().st_mode & 0o077 == 0  # owner only
    root = json.loads(stored_root(engine))["signed"]
    assert root["roles"]["root"]["threshold"] == 2
    public = json.loads((keys / "public-keys.json").read_text())
    assert sorted(root["roles"]["root"]["keyids"]) == sorted(k["keyid"] for k in public["root"])
    assert (
        load_signer(keys / "online.pem", ONLINE_PASSPHRASE).public_key.keyid
        in (root["roles"]["timestamp"]["keyids"])
    )


def test_a_wrong_passphrase_is_a_clear_error_naming_the_file(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, OFFLINE_PASSPHRASE)
    keys = tmp_path / "keys"
    assert (
        _run(
            config, "keys", "init", "--dir", str(keys), "--root-keys", "1", "--root-threshold", "1"
        )
        == 0
    )
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        load_signer(keys / "root-1.pem", "not-the-passphrase")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-passphrase\n")
    capsys.readouterr()
    bundle = make_bundle(tmp_path / "bundle")
    args = ["models", "publish", "--bundle", str(bundle), "--keys-dir", str(keys)]
    assert _run(config, *args, "--passphrase-file", str(wrong)) == 1
    error = capsys.readouterr().err
    assert "targets-1.pem" in error
    assert "wrong passphrase" in error
    assert "not-the-passphrase" not in error


def test_no_passphrase_and_a_second_init_are_refused_without_touching_the_key_files(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "keys"
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    assert _run(config, "keys", "init", "--dir", str(keys)) == 1
    assert PASSPHRASE_ENV in capsys.readouterr().err
    assert not keys.exists()
    monkeypatch.setenv(PASSPHRASE_ENV, OFFLINE_PASSPHRASE)
    assert _run(config, "keys", "init", "--dir", str(keys)) == 0
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert _run(config, "keys", "init", "--dir", str(keys)) == 1
    assert "already initialised" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before


@pytest.mark.parametrize("role", ["root", "targets"])
def test_a_device_holding_root_v1_accepts_a_rotated_key_and_still_verifies_the_model(
    config: Path,
    database: DatabaseSettings,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    role: str,
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, OFFLINE_PASSPHRASE)
    keys = tmp_path / "keys"
    assert _run(config, "keys", "init", "--dir", str(keys)) == 0
    root_v1 = stored_root(engine, 1)
    bundle = make_bundle(tmp_path / "bundle")
    assert _run(config, "models", "publish", "--bundle", str(bundle), "--keys-dir", str(keys)) == 0
    replaced = "root-2" if role == "root" else "targets-1"
    assert (
        _run(config, "keys", "rotate", "--dir", str(keys), "--role", role, "--replace", replaced)
        == 0
    )
    assert (keys / f"{replaced}.pem.retired").exists()
    new_file = "root-4.pem" if role == "root" else "targets-2.pem"
    new_keyid = load_signer(keys / new_file, OFFLINE_PASSPHRASE).public_key.keyid
    old_keyid = load_signer(keys / f"{replaced}.pem.retired", OFFLINE_PASSPHRASE).public_key.keyid
    root_v2 = json.loads(stored_root(engine, 2))
    assert new_keyid in root_v2["signed"]["roles"][role]["keyids"]
    assert old_keyid not in root_v2["signed"]["roles"][role]["keyids"]
    listed = json.loads((keys / "public-keys.json").read_text())
    assert new_keyid in [key["keyid"] for key in listed[role]]
    assert old_keyid not in [key["keyid"] for key in listed[role]]
    settings = repo_settings(database, keys)
    with serving(create_app(settings, engine)) as base:
        client = updater(base, tmp_path / "device", root_v1)
        client.refresh()
        trusted = json.loads((tmp_path / "device" / "metadata" / "root.json").read_bytes())
        assert trusted["signed"]["version"] == 2
        model = client.get_targetinfo("models/roadsign-test/1.0.0/bundle.tar")
        assert model is not None
        assert Path(client.download_target(model)).stat().st_size == model.length
        with httpx.Client(base_url=base, headers=bearer(ADMIN)) as http:
            assert http.get("/tuf/metadata/3.root.json").status_code == 404


def test_production_refuses_a_root_threshold_under_two_before_writing_a_key(
    database: DatabaseSettings, engine: Engine, tmp_path: Path
) -> None:
    settings = repo_settings(database, tmp_path / "keys").model_copy(update={"mode": "production"})
    with pytest.raises(RepositoryError, match="root threshold must be at least 2"):
        keys_init(
            settings,
            engine,
            directory=tmp_path / "keys",
            root_keys=3,
            root_threshold=1,
            passphrase=OFFLINE_PASSPHRASE,
        )
    assert not (tmp_path / "keys").exists()


def test_after_an_online_key_rotation_devices_follow_and_the_old_key_can_sign_nothing(
    config: Path,
    database: DatabaseSettings,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, OFFLINE_PASSPHRASE)
    keys = tmp_path / "keys"
    assert _run(config, "keys", "init", "--dir", str(keys)) == 0
    root_v1 = stored_root(engine, 1)
    bundle = make_bundle(tmp_path / "b")
    assert _run(config, "models", "publish", "--bundle", str(bundle), "--keys-dir", str(keys)) == 0
    settings = repo_settings(database, keys)
    path = "models/roadsign-test/1.0.0/bundle.tar"
    enrol(engine, "cam-1", "cam-2")
    with session_scope(engine) as session:
        service.assign(session, settings, ["cam-1"], path, False, None)
    old = load_signer(keys / "online.pem", ONLINE_PASSPHRASE)
    assert _run(config, "keys", "rotate", "--dir", str(keys), "--role", "online") == 0
    new = load_signer(keys / "online.pem", ONLINE_PASSPHRASE)
    assert load_signer(keys / "online.pem.retired", ONLINE_PASSPHRASE).public_key == old.public_key
    assert new.public_key != old.public_key
    with session_scope(engine) as session:
        service.assign(session, settings, ["cam-2"], path, False, None)  # the new key signs
        with pytest.raises(RepositoryError, match="not trusted by root"):
            service.refresh_timestamp_if_due(session, settings, online=old)
    with serving(create_app(settings, engine)) as base:
        client = updater(base, tmp_path / "device", root_v1)
        client.refresh()
        for device_id in ("cam-1", "cam-2"):
            found = client.get_targetinfo(f"assignments/{device_id}")
            assert found is not None
            assert found.custom["roadsign"]["device_id"] == device_id
    root_v2 = json.loads(stored_root(engine, 2))["signed"]
    assert root_v2["roles"]["timestamp"]["keyids"] == [new.public_key.keyid]
    assert old.public_key.keyid not in root_v2["keys"]
    listed = json.loads((keys / "public-keys.json").read_text())
    assert [key["keyid"] for key in listed["online"]] == [new.public_key.keyid]
