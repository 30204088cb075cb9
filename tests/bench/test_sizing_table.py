"""docs/deploy.md's sizing table quotes only fields that its benchmarks' results files hold.

Each row names a results file and, in brackets, its fields; the row's figures are those fields or
arithmetic on them. The test holds the names to the files and the figures quoted as measured
to the files' values, so a rerun benchmark that moves a number shows up here.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "docs" / "deploy.md"
README = REPO_ROOT / "README.md"
ROW_SOURCE = re.compile(r"`(bench/results/[\w.]+\.json)` \(([^)]*)\)")


def sizing_rows(text: str) -> list[str]:
    """The table rows of the ``## Sizing`` section."""
    section = text.split("\n## Sizing\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def figures(cell: str) -> set[float]:
    """The numbers written in a table cell (thousands separators dropped)."""
    return {float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", cell)}


def test_each_row_names_fields_its_results_file_holds() -> None:
    rows = sizing_rows(DEPLOY.read_text())
    sourced = [ROW_SOURCE.search(row) for row in rows]
    assert sum(m is not None for m in sourced) >= 6, "the table has lost its sources"
    for match in sourced:
        if match is None:
            continue
        results = json.loads((REPO_ROOT / match.group(1)).read_text())
        named = re.findall(r"`(\w+)`", match.group(2))
        missing = [field for field in named if field not in results]
        assert named, f"{match.group(1)}: the row names none of its fields"
        assert not missing, f"{match.group(1)} has no {missing}"


@pytest.mark.parametrize(
    ("results_file", "field"),
    [
        ("ingest.json", "rate"),
        ("ingest.json", "query_p95_ms"),
        ("ingest_saturation.json", "rate"),
        ("ingest_saturation.json", "offered_rate"),
        ("rollout.json", "seconds_to_verified"),
        ("rollout.json", "server_peak_rss_mb"),
        ("agent.json", "fps"),
        ("agent.json", "rss_mb"),
        ("server_image.json", "image_size_mb"),
        ("server_image.json", "oci_archive_gzip_mb"),
    ],
)
def test_the_measured_figure_is_the_files_value(results_file: str, field: str) -> None:
    value = json.loads((REPO_ROOT / "bench" / "results" / results_file).read_text())[field]
    rows = [r for r in sizing_rows(DEPLOY.read_text()) if f"bench/results/{results_file}" in r]
    measured = set().union(*(figures(r.split(" | ")[1]) for r in rows))
    assert float(value) in measured, f"{results_file} {field}={value} not quoted as measured"


def test_the_readme_states_the_image_size_the_bench_measured() -> None:
    results = json.loads((REPO_ROOT / "bench" / "results" / "server_image.json").read_text())
    readme = README.read_text()
    assert f"**{results['image_size_mb']} MB** ({results['oci_archive_gzip_mb']} MB gzip" in readme
    assert results["help_ok"] is True
    assert results["uid_gid_in_container"] == "10001:10001"
    assert not results["host_only_cas_in_image"]


def test_figures_are_read_as_written() -> None:
    assert figures("2,989/s (5,978.6/s by 2 workers for 60 s)") == {2989, 5978.6, 2, 60}
