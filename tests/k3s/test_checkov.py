"""checkov on the rendered chart, the Dockerfiles and the workflows: clean, with every skip
justified where it is made, and failing on a broken copy of each.

checkov lives in its own venv, ``.cache/checkov`` (`make setup`; tools/checkov-requirements.txt
says why not .venv). One run scans a folder laid out for it: the chart rendered (defaults and
production, every optional part on), docker/, .github/workflows/, and beside them broken copies
whose findings must be exactly the ones broken in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.k3s.conftest import CHART, ENVIRONMENTS, Render
from tests.k3s.manifests import parse

CHECKOV = REPO_ROOT / ".cache" / "checkov" / "bin" / "checkov"
CONFIG = REPO_ROOT / ".checkov.yaml"
EVERYTHING_ON = (
    "--set",
    "otel.enabled=true",
    "--set",
    "otel.exporter.endpoint=jaeger-collector.observability:4317",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
)
# A reason is a sentence, not a placeholder.
REASON = re.compile(r"\S.{19,}")
Finding = tuple[str, str]


def lay_out(scan: Path, render: Render) -> None:
    """The real files under scan/real, broken copies under scan/broken."""
    real, broken = scan / "real", scan / "broken"
    for env in ("defaults", "production"):
        values = ENVIRONMENTS[env]
        result = render(CHART, *EVERYTHING_ON, *(["--values", str(values)] if values else []))
        assert result.returncode == 0, result.stderr
        (real / "chart").mkdir(parents=True, exist_ok=True)
        (real / "chart" / f"{env}.yaml").write_text(result.stdout)
    shutil.copytree(REPO_ROOT / "docker", real / "docker")
    shutil.copytree(REPO_ROOT / ".github" / "workflows", real / ".github" / "workflows")

    docs = parse((real / "chart" / "defaults.yaml").read_text())
    (api,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")
    ]
    api["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "allowPrivilegeEscalation"
    ] = True
    (broken / "chart").mkdir(parents=True)
    (broken / "chart" / "api.yaml").write_text(yaml.safe_dump(api))
    (broken / "docker").mkdir()
    server = (REPO_ROOT / "docker" / "server.Dockerfile").read_text()
    (broken / "docker" / "server.Dockerfile").write_text(
        server.replace("USER 10001:10001\n", "") + "USER root\n"
    )
    (broken / ".github" / "workflows").mkdir(parents=True)
    ci = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text()
    (broken / ".github" / "workflows" / "ci.yml").write_text(
        ci.replace("permissions:\n  contents: read\n", "permissions: write-all\n")
    )


@pytest.fixture(scope="module")
def findings(render: Render, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's reports by framework, and every failed (check, file) under real/ and broken/."""
    if not CHECKOV.exists():
        pytest.fail("checkov is needed: run `make setup` (it installs .cache/checkov)")
    scan = tmp_path_factory.mktemp("checkov")
    lay_out(scan, render)
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "-d", str(scan), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=scan,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed: dict[str, set[Finding]] = {"real": set(), "broken": set()}
    for report in reports:
        for check in report["results"].get("failed_checks", []):
            part = check["file_path"].lstrip("/").split("/")[0]
            failed[part].add((check["check_id"], check["file_path"].split("/", 2)[-1]))
    return {"reports": {r["check_type"]: r["summary"] for r in reports}, **failed}


def test_the_chart_dockerfiles_and_workflows_pass_checkov(findings: dict[str, Any]) -> None:
    assert findings["real"] == set()
    summaries = findings["reports"]
    assert set(summaries) == {"kubernetes", "dockerfile", "github_actions"}
    for framework, summary in summaries.items():
        assert summary["parsing_errors"] == 0, framework
        assert summary["passed"] > 0, framework


def test_checkov_fails_on_what_was_broken_in(findings: dict[str, Any]) -> None:
    broken = {check for check, _ in findings["broken"]}
    # A container allowed to escalate, an image ending as root, a workflow that may write all.
    assert {"CKV_K8S_20", "CKV_DOCKER_8", "CKV2_GHA_1"} <= broken


def test_every_chart_wide_skip_says_why() -> None:
    lines = CONFIG.read_text().splitlines()
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]
    for check in skips:
        at = lines.index(f"  - {check}")
        assert lines[at - 1].startswith("  #"), f"{check} is skipped without a reason above it"


def test_every_skip_in_place_names_its_check_and_says_why(rendered: dict[str, str]) -> None:
    annotations = [
        (doc["metadata"]["name"], key, value)
        for env in ENVIRONMENTS
        for doc in parse(rendered[env])
        for key, value in (doc["metadata"].get("annotations") or {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert annotations, "the broker's and PostgreSQL's own uids are skipped in place"
    for name, key, value in annotations:
        check, _, reason = value.partition("=")
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check), f"{name} {key}: {value}"
        assert REASON.fullmatch(reason), f"{name} {key}: no reason"
    for dockerfile in (REPO_ROOT / "docker").glob("*.Dockerfile"):
        for check, reason in re.findall(r"checkov:skip=(\S+?):(.*)", dockerfile.read_text()):
            assert REASON.fullmatch(reason.strip()), f"{dockerfile.name} {check}: no reason"
