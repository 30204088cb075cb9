"""``make demo``'s script, run as a user runs it: MLflow and the registry, the fleet server
publishing from it, three live agents; every process it started is gone when it ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BUNDLE = REPO_ROOT / "models" / "default"
DEVICES = ("demo-car-0001", "demo-car-0002", "demo-car-0003")


def _demo_processes() -> list[str]:
    """Command lines of processes that still use the demo's folder."""
    work = str(REPO_ROOT / ".cache" / "demo")
    found = []
    for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        if work in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLE / "bundle.json").exists(), reason="models/default is not built")
def test_the_demo_publishes_from_mlflow_and_keeps_three_agents_reading_then_stops_all() -> None:
    result = subprocess.run(
        [sys.executable, "tools/demo.py"],
        cwd=REPO_ROOT,
        env={**os.environ, "DEMO_SECONDS": "8"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for device in DEVICES:
        stored = re.search(rf"^  {device}: (\d+) readings$", out, re.MULTILINE)
        assert stored, out
        assert int(stored.group(1)) > 0, out
    published = re.search(r"Published model \S+ \S+ from MLflow \((.*)\)", out)
    assert published, out
    assert "registered_model roadsign-bundle" in published.group(1)
    assert "registered_version 1" in published.group(1)
    assert "mlflow_run_id " in published.group(1)
    assert re.search(
        r"Dashboard: http://127\.0\.0\.1:\d+/  \(log in with the admin token rsf_", out
    )
    assert re.search(r"MLflow: http://127\.0\.0\.1:\d+/", out)
    assert _demo_processes() == []
