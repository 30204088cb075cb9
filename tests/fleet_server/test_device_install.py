"""The bundle an enrolment answers, installed by deploy/device/install.sh into a temporary root.

The bundle is the fleet server's own: a device enrolled through the API on a broker whose accounts
the server keeps (dynamic security) and an initialised TUF repository. The script runs with
``--root``, so it touches nothing outside that folder; the agent it finds there is this checkout's.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge_agent.profile import ENV_PREFIX, DeviceProfile
from fleet_protocol.config_files import load_config
from fleet_server.db import make_engine
from fleet_server.models import DeviceBundle
from fleet_server.settings import DatabaseSettings
from tests.conftest import REPO_ROOT
from tests.fleet_server.broker_support import managed_broker, serving
from tests.fleet_server.repository.support import initialised_repository
from tests.postgres import Postgres
from tests.tls import make_pki

INSTALL = REPO_ROOT / "deploy" / "device" / "install.sh"
UNIT = REPO_ROOT / "deploy" / "device" / "roadsign-agent.service"
BASE_PROFILE = REPO_ROOT / "firmware_configs" / "vehicle-rpi.yaml"
FLEET_URL = "https://fleet.example"


@pytest.fixture(scope="module")
def bundle(
    postgres: Postgres, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The JSON `POST /api/v1/devices` answered for bus-17, saved as an operator would; made once
    for the module (the tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("enrolment")
    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name, template=migrated_template)
    database = DatabaseSettings(url=postgres.url(name))
    engine = make_engine(database)
    try:
        pki = make_pki(tmp_path / "pki")
        repository, _ = initialised_repository(database, engine, tmp_path / "keys")
        with managed_broker(database, tmp_path, "dynamic_security") as (settings, _):
            enrolment = settings.enrolment.model_copy(
                update={"broker_public_url": "mqtts://mqtt.fleet.example:8883", "ca_file": pki.ca}
            )
            settings = settings.model_copy(update={"tuf": repository.tuf, "enrolment": enrolment})
            with serving(settings) as (api, _):
                response = api.post(
                    "/api/v1/devices", json={"device_id": "bus-17", "profile": "vehicle-rpi"}
                )
    finally:
        engine.dispose()
        postgres.drop_database(name)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["password"]
    assert answer["ca_certificate"]
    assert answer["tuf_root"]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(answer))
    return path


def device_root(tmp_path: Path) -> Path:
    """A temporary root with the agent of this checkout where the script looks for it."""
    root = tmp_path / "root"
    agent = root / "opt" / "roadsign" / "venv" / "bin" / "roadsign-agent"
    agent.parent.mkdir(parents=True)
    # This checkout's code, whichever checkout the test venv was installed from.
    agent.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m edge_agent.cli "$@"\n'
    )
    agent.chmod(0o755)
    return root


def install(
    root: Path, bundle: Path, *args: str, profile: Path | None = BASE_PROFILE
) -> subprocess.CompletedProcess[str]:
    """install.sh --root `root` on `bundle`; `profile` None: the one the bundle names."""
    named = ["--profile", str(profile)] if profile is not None else []
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *named, *args, str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(root)},
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_enrolment_bundle_installs_the_agents_files_with_their_modes(
    bundle: Path, tmp_path: Path
) -> None:
    root = device_root(tmp_path)
    result = install(root, bundle, "--fleet-url", FLEET_URL)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(bundle.read_text())
    etc = root / "etc" / "roadsign"
    assert (etc / "broker-password").read_text() == answer["password"]
    assert mode(etc / "broker-password") == 0o600
    assert (etc / "tls" / "ca.pem").read_text() == answer["ca_certificate"]
    tuf_root = root / "var" / "lib" / "roadsign" / "tuf-root.json"
    assert json.loads(tuf_root.read_text()) == answer["tuf_root"]
    assert mode(root / "var" / "lib" / "roadsign") == 0o750
    installed_unit = root / "etc" / "systemd" / "system" / "roadsign-agent.service"
    assert installed_unit.read_text() == UNIT.read_text()
    assert mode(etc / "profile.yaml") == 0o644
    assert answer["password"] not in (etc / "profile.yaml").read_text()
    # Nothing on the machine itself: every such step says it was skipped.
    for step in ("apt-get install", "useradd", "chown", "systemctl enable"):
        assert f"skipped (--root): {step}" in result.stdout

    profile = load_config(DeviceProfile, etc / "profile.yaml")
    assert profile.identity.device_id == "bus-17"
    assert profile.broker.url == "mqtts://mqtt.fleet.example:8883"
    assert profile.broker.username == "bus-17"
    assert str(profile.broker.tls.ca_file) == "/etc/roadsign/tls/ca.pem"
    assert (profile.ota.enabled, profile.ota.repository_url) == (True, FLEET_URL)
    assert str(profile.ota.trusted_root_file) == "/var/lib/roadsign/tuf-root.json"
    assert profile.detector.backend == "onnxruntime"  # the base profile's own settings stay

    # Under the unit, the agent reads the password from its systemd credential, not /etc.
    environment = [
        line.removeprefix("Environment=").split("=", 1)
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"Environment={ENV_PREFIX}")
    ]
    credentials = tmp_path / "credentials"
    env = {name: value.replace("%d", str(credentials)) for name, value in environment}
    under_unit = load_config(DeviceProfile, etc / "profile.yaml", env=env, env_prefix=ENV_PREFIX)
    assert under_unit.broker.password_file == credentials / "broker-password"
    assert "LoadCredential=broker-password:/etc/roadsign/broker-password" in UNIT.read_text()


@pytest.mark.parametrize("field", ["broker_url", "tuf_root"])
def test_a_bundle_missing_a_field_is_refused_by_name_before_anything_is_written(
    bundle: Path, tmp_path: Path, field: str
) -> None:
    answer = json.loads(bundle.read_text())
    del answer[field]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(answer))
    root = device_root(tmp_path)
    result = install(root, broken)
    assert result.returncode != 0
    assert f"{field}: Field required" in result.stderr
    assert not (root / "etc").exists()
    assert not (root / "var").exists()


def test_dry_run_lists_the_files_and_writes_none(bundle: Path, tmp_path: Path) -> None:
    root = device_root(tmp_path)
    # No --profile: the base is the profile the device was enrolled with.
    result = install(root, bundle, "--dry-run", profile=None)
    assert result.returncode == 0, result.stderr
    assert "would write /etc/roadsign/broker-password (0600)" in result.stdout
    assert f"--base-profile {BASE_PROFILE}" in result.stdout
    assert not (root / "etc").exists()


def test_the_agent_reads_every_field_of_the_servers_bundle_it_needs() -> None:
    from edge_agent.device_install import EnrolmentBundle

    server_fields = set(DeviceBundle.model_fields)
    assert set(EnrolmentBundle.model_fields) <= server_fields
