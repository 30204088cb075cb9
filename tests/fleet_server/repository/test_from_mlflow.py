"""``models publish --from-mlflow NAME@ALIAS`` against a real ``mlflow server`` over HTTP: the
alias resolves to its run, the bundle logged there is downloaded, checked and signed in with the
registry's lineage; a bundle over the size limit is refused before any byte is downloaded."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from fleet_server.cli import main
from fleet_server.db import session_scope
from fleet_server.exceptions import BundleError
from fleet_server.repository import service, storage
from fleet_server.repository.mlflow_source import fetch_bundle
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.repository.support import (
    OFFLINE_PASSPHRASE,
    ONLINE_PASSPHRASE,
    make_bundle,
)
from tests.mosquitto import free_port
from tests.waiting import wait_until

NAME = "roadsign-bundle"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store, proxied artifacts) on a free port."""
    port = free_port()
    log = (tmp_path / "mlflow.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "mlflow-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url) or process.poll() is not None, 120, "mlflow to start")
        assert process.poll() is None, (tmp_path / "mlflow.log").read_text()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _register(url: str, bundle: Path) -> str:
    """Log `bundle` as a run's ``bundle`` artifacts, register it, alias it champion."""
    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment("bundles")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(bundle), "bundle")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(NAME)
    version = client.create_model_version(
        NAME, f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id
    )
    client.set_registered_model_alias(NAME, "champion", version.version)
    return str(run.info.run_id)


@pytest.mark.slow
def test_publish_from_mlflow_signs_the_registered_bundle_with_its_lineage(
    mlflow_server: str,
    database: DatabaseSettings,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = _register(mlflow_server, make_bundle(tmp_path / "bundle", version="2.0.0"))
    keys = tmp_path / "keys"
    config = tmp_path / "fleet.yaml"
    tuf = {
        "online_key_file": str(keys / "online.pem"),
        "online_key_passphrase": ONLINE_PASSPHRASE,
        "mlflow_tracking_uri": mlflow_server,
    }
    config.write_text(yaml.safe_dump({"database": {"url": database.url}, "tuf": tuf}))
    monkeypatch.setenv("ROADSIGN_FLEET_KEYS_PASSPHRASE", OFFLINE_PASSPHRASE)
    assert main(["keys", "init", "--dir", str(keys), "--config", str(config)]) == 0
    publish = ["models", "publish", "--keys-dir", str(keys), "--config", str(config)]
    assert main([*publish, "--from-mlflow", f"{NAME}@champion"]) == 0
    with session_scope(engine) as session:
        targets = storage.load_state(session).targets.signed.targets
    signed = targets[service.model_target_path("roadsign-test", "2.0.0")].custom["roadsign"]
    assert signed["registered_model"] == NAME
    assert signed["registered_version"] == "1"
    assert signed["mlflow_run_id"] == run_id
    assert main([*publish, "--from-mlflow", f"{NAME}@no-such-alias"]) == 1

    with pytest.raises(BundleError, match="at most 100 are published"):
        fetch_bundle(mlflow_server, f"{NAME}@champion", tmp_path / "small", max_bytes=100)
    assert not (tmp_path / "small").exists()  # refused before anything was downloaded
