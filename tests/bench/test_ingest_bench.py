"""The ingestion benchmark runs end to end on a tiny fleet and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"devices", "rate", "raw_rate", "ratio", "lost", "duplicated", "p95_latency_ms"}


@pytest.mark.slow
def test_a_small_run_stores_every_reading_once_and_writes_the_promised_keys(
    tmp_path: Path,
) -> None:
    output = tmp_path / "ingest.json"
    subprocess.run(
        [
            sys.executable,
            "bench/ingest.py",
            "--devices",
            "20",
            "--rate",
            "5",
            "--duration",
            "3",
            "--workers",
            "1",
            "--query-rows",
            "2000",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    result = json.loads(output.read_text())
    assert KEYS | {"query_p95_ms"} <= set(result)
    assert result["devices"] == 20
    assert result["sent"] > 200  # 20 devices x 5/s x 3 s, less the start
    assert (result["lost"], result["duplicated"]) == (0, 0)
    assert result["raw_rate"] > 0
    assert result["rate"] > 0
    assert result["query_p95_ms"] > 0
