"""The edge install holds neither torch nor ultralytics; ``roadsign-agent --help`` runs there."""

from __future__ import annotations

import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
FORBIDDEN_ON_EDGE = {"torch", "torchvision", "ultralytics", "fastapi", "sqlmodel", "mlflow"}


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_edge_extra_declares_nothing_heavy() -> None:
    assert _names(EXTRAS["edge"]).isdisjoint(FORBIDDEN_ON_EDGE)
    assert _names(PYPROJECT["project"]["dependencies"]).isdisjoint(FORBIDDEN_ON_EDGE)
    assert {"torch", "ultralytics"} <= _names(EXTRAS["train"])


def test_console_scripts_point_at_real_functions() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"roadsign-agent", "roadsign-fleet", "roadsign-train"}
    for target in scripts.values():
        module, _, func = target.partition(":")
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        assert f"def {func}(" in path.read_text()


@pytest.mark.slow
def test_fresh_edge_venv_has_no_torch_and_the_agent_help_runs(tmp_path: Path) -> None:
    env_dir = tmp_path / "edge-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{REPO_ROOT}[edge]",
        ],
        check=True,
        timeout=900,
        capture_output=True,
        text=True,
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert names.isdisjoint(FORBIDDEN_ON_EDGE), sorted(names & FORBIDDEN_ON_EDGE)
    assert {"onnxruntime", "openvino", "paho-mqtt", "tesserocr"} <= names
    result = subprocess.run(
        [str(env_dir / "bin" / "roadsign-agent"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "validate-config" in result.stdout
    profile = REPO_ROOT / "firmware_configs" / "vehicle-rpi.yaml"
    check = subprocess.run(
        [str(env_dir / "bin" / "roadsign-agent"), "validate-config", str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
