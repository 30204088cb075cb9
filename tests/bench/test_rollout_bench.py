"""The rollout benchmark runs end to end on a tiny fleet and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "devices",
    "concurrency",
    "bundle_bytes",
    "seconds_to_verified",
    "raw_seconds",
    "ratio",
    "seconds_to_active",
    "failed",
    "server_peak_rss_mb",
}


@pytest.mark.slow
def test_a_small_rollout_gets_every_device_verified_and_active_and_writes_the_promised_keys(
    tmp_path: Path,
) -> None:
    output = tmp_path / "rollout.json"
    subprocess.run(
        [
            sys.executable,
            "bench/rollout.py",
            "--devices",
            "5",
            "--concurrency",
            "2",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    result = json.loads(output.read_text())
    assert set(result) >= KEYS
    assert result["devices"] == 5
    assert result["failed"] == 0, result["failures"]
    assert result["raw_failed"] == 0
    assert result["bundle_bytes"] > 1_000_000  # the shipped bundle, not a stand-in
    assert result["raw_seconds"] > 0
    assert 0 < result["seconds_to_verified"] <= result["seconds_to_active"]
    assert result["ratio"] > 0
    assert result["server_peak_rss_mb"] > 10
