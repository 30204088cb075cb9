"""The model registry: versions with lineage and the candidate alias; promotion with checks.

Runs against a local SQLite store, and against a real ``mlflow server`` process over HTTP.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.registry import (
    CANDIDATE,
    CHAMPION,
    RegistryError,
    get_version,
    promote,
    register_version,
    registered_name,
)
from training.tracking import tracked_run

LINEAGE = {"git_sha": "abc", "format": "onnx_int8", "sha256": "f" * 64}


def _logged_run(uri: str, tmp_path: Path) -> str:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    with tracked_run(uri, "registry-test", "export") as run:
        run.artifact(artifact, "models/onnx_int8")
        return run.run_id


def _exercise(uri: str, tmp_path: Path) -> None:
    name = registered_name("roadsign-detector", "onnx_int8")
    assert name == "roadsign-detector-onnx-int8"
    run_id = _logged_run(uri, tmp_path)
    first = register_version(
        uri,
        name,
        run_id=run_id,
        artifact_path="models/onnx_int8",
        lineage=LINEAGE,
        metrics={"map50": 0.8},
    )
    assert get_version(uri, name, CANDIDATE).version == first.version
    assert get_version(uri, name, first.version).tags["sha256"] == "f" * 64
    assert promote(uri, name, floors={"map50": 0.5}).version == first.version
    assert get_version(uri, name, CHAMPION).metrics == {"map50": 0.8}

    worse = register_version(
        uri,
        name,
        run_id=run_id,
        artifact_path="models/onnx_int8",
        lineage=LINEAGE,
        metrics={"map50": 0.6},
    )
    with pytest.raises(RegistryError, match=r"map50 0\.6000 is below champion v1's 0\.8000"):
        promote(uri, name, floors={"map50": 0.5})
    assert promote(uri, name, floors={}, tolerance=0.25).version == worse.version
    better = register_version(
        uri,
        name,
        run_id=run_id,
        artifact_path="models/onnx_int8",
        lineage=LINEAGE,
        metrics={"map50": 0.9},
    )
    with pytest.raises(RegistryError, match=r"map50 0\.9000 < floor 0\.9500"):
        promote(uri, name, floors={"map50": 0.95})
    with pytest.raises(RegistryError, match="recall"):
        promote(uri, name, floors={"recall": 0.1})  # a metric the version lacks fails
    assert get_version(uri, name, CHAMPION).version == worse.version
    assert promote(uri, name, better.version, floors={"map50": 0.85}).version == better.version
    with pytest.raises(RegistryError, match="no version 'nope'"):
        get_version(uri, name, "nope")


def test_registry_on_a_local_sqlite_store(tmp_path: Path) -> None:
    _exercise(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
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
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_registry_against_a_real_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    _exercise(mlflow_server, tmp_path)
