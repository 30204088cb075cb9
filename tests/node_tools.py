"""Running the JavaScript tools of the checks (package.json; `make setup` installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def run_node(
    script: Path, *args: str, needs: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`node script args` from the repository root; fails the test if node or `needs` is missing."""
    node = shutil.which("node")
    if node is None or not script.exists() or (needs is not None and not needs.exists()):
        pytest.fail(f"node and {needs or script} are needed: run `make setup`")
    return subprocess.run(
        [node, str(script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO_ROOT,
    )
