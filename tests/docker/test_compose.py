"""deploy/compose/docker-compose.yml: every service hardened, built from a Dockerfile that exists
or a pinned image the chart also runs, secrets only from files, and settings the server accepts.

No Docker here (nor in CI), so ``docker compose config`` cannot run: the file is read as YAML
(merge keys resolved as compose resolves them) and walked; each check is also shown failing.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet_protocol.config_files import load_config
from fleet_server.cli import build_parser
from fleet_server.settings import ENV_PREFIX, ServerSettings
from tests.conftest import REPO_ROOT

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
CHART_VALUES = REPO_ROOT / "k3s" / "roadsign-fleet" / "values.yaml"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PASSPHRASE")
SECRETS_PATH = re.compile(r"/run/secrets/([\w.-]+)")
Service = dict[str, Any]


INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


def load() -> dict[str, Any]:
    """The file as compose reads it with no variable set: each ${NAME:-default} its default."""
    text = COMPOSE.read_text()
    assert "$" not in INTERPOLATION.sub("", text), "only ${NAME:-default} is interpolated here"
    document: dict[str, Any] = yaml.safe_load(INTERPOLATION.sub(r"\2", text))
    return document


def strings(service: Service) -> list[str]:
    """Every command word and environment value of a service."""
    command = service.get("command", [])
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return words + [str(v) for v in service.get("environment", {}).values()]


def service_problems(name: str, service: Service, document: dict[str, Any]) -> list[str]:
    """Why `service` is not hardened or not wired as the file's rules say; empty when it is."""
    problems = []
    user = str(service.get("user", "")).split(":")[0]
    if not user.isdigit() or int(user) == 0:
        problems.append(f"{name}: user {user or '(unset)'} is not a numeric non-root uid")
    if service.get("read_only") is not True:
        problems.append(f"{name}: root filesystem writable")
    if "ALL" not in service.get("cap_drop", []):
        problems.append(f"{name}: capabilities not dropped")
    if "no-new-privileges:true" not in service.get("security_opt", []):
        problems.append(f"{name}: may gain privileges")
    if service.get("restart") != "no" and "test" not in service.get("healthcheck", {}):
        problems.append(f"{name}: a long-running service without a healthcheck")
    if "build" in service:
        context = (COMPOSE_DIR / service["build"]["context"]).resolve()
        if not (context / service["build"]["dockerfile"]).is_file():
            problems.append(f"{name}: no Dockerfile {service['build']['dockerfile']}")
    elif not re.fullmatch(r"docker\.io/library/[\w.-]+:\d[\w.-]*", service.get("image", "")):
        problems.append(f"{name}: image {service.get('image')} is not a pinned official image")
    for variable, value in service.get("environment", {}).items():
        if any(word in variable for word in SECRET_WORDS) and not variable.endswith("_FILE"):
            problems.append(f"{name}: {variable} holds a secret in the environment ({value!r})")
    mounted = set(service.get("secrets", []))
    for secret in mounted - set(document.get("secrets", {})):
        problems.append(f"{name}: secret {secret} is not defined")
    for secret in {m for s in strings(service) for m in SECRETS_PATH.findall(s)} - mounted:
        problems.append(f"{name}: reads /run/secrets/{secret} but does not mount it")
    return problems


def compose_problems(document: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in document["services"].items():
        problems += service_problems(name, service, document)
    for name, secret in document.get("secrets", {}).items():
        if not str(secret.get("file", "")).startswith("./secrets/"):
            problems.append(f"secret {name}: not a file under ./secrets/ (make-secrets.sh)")
    return problems


def test_the_compose_file_runs_the_fleet_hardened_from_files_that_exist() -> None:
    document = load()
    assert set(document["services"]) == {
        "postgres",
        "migrate",
        "broker-config",
        "mosquitto",
        "server",
        "ingest",
        "mlflow",
    }
    assert compose_problems(document) == []
    for volume in document["services"]["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (COMPOSE_DIR / source).is_dir(), source


def test_the_third_party_images_are_the_ones_the_chart_runs() -> None:
    images = yaml.safe_load(CHART_VALUES.read_text())["images"]
    services = load()["services"]
    for service, chart in (("postgres", "postgresql"), ("mosquitto", "mosquitto")):
        assert services[service]["image"] == f"{images[chart]['repository']}:{images[chart]['tag']}"


def test_the_walk_finds_each_broken_rule() -> None:
    document = copy.deepcopy(load())
    services = document["services"]
    del services["server"]["read_only"]
    services["ingest"]["user"] = "0:0"
    services["mosquitto"]["cap_drop"] = []
    del services["mlflow"]["healthcheck"]
    services["migrate"]["build"] = {"context": "../..", "dockerfile": "docker/gone.Dockerfile"}
    services["postgres"]["image"] = "postgres:latest"
    services["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    services["broker-config"]["secrets"].remove("broker-tls-key")
    assert compose_problems(document) == [
        "postgres: image postgres:latest is not a pinned official image",
        "postgres: POSTGRES_PASSWORD holds a secret in the environment ('hunter2')",
        "migrate: no Dockerfile docker/gone.Dockerfile",
        "broker-config: reads /run/secrets/broker-tls-key but does not mount it",
        "mosquitto: capabilities not dropped",
        "server: root filesystem writable",
        "ingest: user 0 is not a numeric non-root uid",
        "mlflow: a long-running service without a healthcheck",
    ]


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What make-secrets.sh writes (as whoever runs the tests: chown only as root)."""
    work = tmp_path_factory.mktemp("compose")
    tls = [work / name for name in ("broker.pem", "broker.key", "ca.pem")]
    for path in tls:
        path.write_text(f"PEM of {path.name}\n")
    out = work / "secrets"
    result = subprocess.run(
        ["bash", str(COMPOSE_DIR / "make-secrets.sh"), *map(str, tls)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.environ["PATH"], "SECRETS_DIR": str(out)},
    )
    assert result.returncode == 0, result.stderr
    return out


def test_make_secrets_writes_every_secret_file_the_compose_file_names_read_only(
    secrets_dir: Path,
) -> None:
    for secret in load()["secrets"].values():
        path = secrets_dir / Path(secret["file"]).name
        assert stat.S_IMODE(path.stat().st_mode) == 0o400, path
    host, port, database, user, password = (secrets_dir / "pgpass").read_text().strip().split(":")
    assert (host, port, database, user) == ("postgres", "5432", "*", "fleet")
    assert password == (secrets_dir / "postgres-password").read_text()


@pytest.mark.parametrize("name", ["migrate", "broker-config", "server", "ingest"])
def test_each_server_process_gets_valid_production_settings(secrets_dir: Path, name: str) -> None:
    service = load()["services"][name]
    args = build_parser().parse_args(service["command"])  # a real subcommand with real options
    config = secrets_dir / args.config.name
    settings: ServerSettings = load_config(
        ServerSettings, config, env=service["environment"], env_prefix=ENV_PREFIX
    )
    assert settings.mode == "production"
    assert settings.broker.url == "mqtts://mosquitto:8883"
    manages_accounts = settings.enrolment.broker_auth == "dynamic_security"
    assert manages_accounts == (name in {"server", "broker-config"})
    # Only what manages the broker's accounts holds its admin password.
    held = yaml.safe_load(config.read_text())
    assert ("broker_admin_password" in held.get("enrolment", {})) == manages_accounts
