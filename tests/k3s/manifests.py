"""A walk over rendered Kubernetes manifests: what every workload of the chart must hold.

Every container (init containers too) runs as non-root with a read-only root filesystem and has
CPU and memory requests and limits; every long-running container (not a Job's) has a liveness and
a readiness probe. `workload_problems` names each gap, so a test can assert there is none, and a
test on a broken chart can assert the very gap it made is found.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

Manifest = dict[str, Any]

LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
RUN_TO_COMPLETION = frozenset({"Job", "CronJob"})


def parse(rendered: str) -> list[Manifest]:
    """The documents of a `helm template` output, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def pod_spec(manifest: Manifest) -> Manifest | None:
    """The pod spec of a workload manifest; None for anything that runs no pods."""
    kind = manifest.get("kind")
    if kind == "CronJob":
        return manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind in LONG_RUNNING or kind == "Job":
        return manifest["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def workloads(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload."""
    for manifest in manifests:
        spec = pod_spec(manifest)
        if spec is not None:
            yield f"{manifest['kind']}/{manifest['metadata']['name']}", spec


def _container_problems(pod: Manifest, container: Manifest, *, needs_probes: bool) -> list[str]:
    pod_security = pod.get("securityContext") or {}
    security = container.get("securityContext") or {}
    problems = []
    non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    if non_root is not True or user == 0:
        problems.append("may run as root")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem writable")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation allowed")
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in (resources.get(kind) or {})]
        if missing:
            problems.append(f"no {kind} for {', '.join(missing)}")
    if needs_probes:
        problems += [
            f"no {probe}" for probe in ("livenessProbe", "readinessProbe") if probe not in container
        ]
    return problems


def workload_problems(manifests: list[Manifest]) -> list[str]:
    """'kind/name container: problem' for each rule a workload breaks; empty when all hold."""
    found = []
    for kind in {m.get("kind") for m in manifests} - LONG_RUNNING - RUN_TO_COMPLETION:
        if kind in {"Pod", "PodTemplate"}:
            found.append(f"{kind}: bare pods are not allowed (use a Deployment or Job)")
    for name, pod in workloads(manifests):
        long_running = name.split("/")[0] in LONG_RUNNING
        for container in pod.get("containers", []):
            for problem in _container_problems(pod, container, needs_probes=long_running):
                found.append(f"{name} {container['name']}: {problem}")
        for container in pod.get("initContainers", []):
            for problem in _container_problems(pod, container, needs_probes=False):
                found.append(f"{name} {container['name']}: {problem}")
    return found


def find(manifests: list[Manifest], kind: str, name_suffix: str = "") -> list[Manifest]:
    """Manifests of `kind` whose name ends with `name_suffix`."""
    return [
        m
        for m in manifests
        if m.get("kind") == kind and m["metadata"]["name"].endswith(name_suffix)
    ]


def server_containers(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The fleet-server containers by their subcommand (serve, ingest, migrate, broker-config)."""
    found = {}
    for _, pod in workloads(manifests):
        for container in pod.get("initContainers", []) + pod["containers"]:
            if "/roadsign-fleet/server" in container["image"]:
                found[container["args"][0]] = container
    return found
