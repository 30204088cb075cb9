"""The chart rendered with the real helm, once per session, for every test of k3s/."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helm import helm_binary, run_helm

CHART = REPO_ROOT / "k3s" / "roadsign-fleet"
ENVIRONMENTS = {
    "defaults": None,
    "staging": CHART / "values-staging.yaml",
    "production": CHART / "values-production.yaml",
}

Render = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_binary(REPO_ROOT / ".cache" / "k3s")


@pytest.fixture(scope="session")
def render(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template fleet CHART -n fleet EXTRA...` (release fleet, as the tests name it)."""
    home = tmp_path_factory.mktemp("helm-home")

    def template(chart: Path = CHART, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_helm(helm, home, "template", "fleet", str(chart), "--namespace", "fleet", *extra)

    return template


@pytest.fixture(scope="session")
def rendered(render: Render) -> dict[str, str]:
    """`helm template` output per environment (values files on top of the defaults)."""
    out = {}
    for env, values in ENVIRONMENTS.items():
        result = render(CHART, *(["--values", str(values)] if values else []))
        assert result.returncode == 0, result.stderr
        out[env] = result.stdout
    return out
