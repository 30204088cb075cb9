"""The import-linter contracts of pyproject.toml catch a forbidden import in a copy of the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("fleet_protocol", "edge_agent", "fleet_server", "training")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_real_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        (
            "edge_agent/leak.py",
            "import fleet_server.settings",
            "edge_agent and fleet_server never import each other",
        ),
        (
            "fleet_server/leak.py",
            "from edge_agent import profile",
            "edge_agent and fleet_server never import each other",
        ),
        ("fleet_protocol/leak.py", "import edge_agent", "fleet_protocol imports nothing of ours"),
        ("edge_agent/leak.py", "import training.config", "nothing imports training"),
        (
            "edge_agent/leak.py",
            "import torch",
            "edge_agent never imports torch, ultralytics or the server stack",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    (tree / module).write_text(f'"""A deliberate violation."""\n\n{statement}\n')
    result = _lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
