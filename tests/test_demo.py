"""``make demo``'s script, run as a user runs it: the whole stack, and one reading per sign."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

BUNDLE = REPO_ROOT / "models" / "default"


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLE / "bundle.json").exists(), reason="models/default is not built")
def test_the_demo_carries_each_sign_of_the_drive_to_the_fleet_server_once() -> None:
    result = subprocess.run(
        [sys.executable, "tools/demo.py"],
        cwd=REPO_ROOT,
        env={**os.environ, "DEMO_HOLD": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    passed = re.search(r"The drive passed (\d+) signs", result.stdout)
    stored = re.search(r"The fleet server stored (\d+) readings", result.stdout)
    assert passed, result.stdout
    assert stored, result.stdout
    assert int(stored.group(1)) == int(passed.group(1)), result.stdout
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/", result.stdout)
