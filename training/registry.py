"""The MLflow model registry: every export a version with its lineage, aliases, promotion.

Each artifact format is a registered model of its own (``roadsign-detector-onnx-int8``...), so
each has its own ``candidate`` and ``champion`` aliases. A version carries lineage tags: the run,
the dataset manifest hashes, the git sha, the format, the artifact's sha256 and its metrics.
Promotion moves ``champion`` to a version only when its metrics pass the given floors and do not
fall behind the current champion's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from training.exceptions import TrainingError
from training.tracking import prepare_store

CANDIDATE = "candidate"
CHAMPION = "champion"
METRIC_TAG = "metric."


class RegistryError(TrainingError):
    """The registry refused an operation, or a promotion failed its checks."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered version."""

    name: str
    version: str
    tags: dict[str, str]

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded on the version."""
        return {
            k.removeprefix(METRIC_TAG): float(v)
            for k, v in self.tags.items()
            if k.startswith(METRIC_TAG)
        }


def registered_name(base: str, model_format: str) -> str:
    """Registered-model name of one format: ``<base>-onnx-int8``."""
    return f"{base}-{model_format.replace('_', '-')}"


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_params(tracking_uri: str, run_id: str) -> dict[str, str]:
    """The params an MLflow run logged."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(_client(tracking_uri).get_run(run_id).data.params)
    except MlflowException as e:
        raise TrainingError(f"cannot read MLflow run {run_id}: {e}") from e


def register_version(
    tracking_uri: str,
    name: str,
    *,
    run_id: str,
    artifact_path: str,
    lineage: Mapping[str, str],
    metrics: Mapping[str, float],
) -> RegisteredVersion:
    """Register the run's `artifact_path` as a new version of `name`, aliased ``candidate``."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    tags = {**lineage, **{f"{METRIC_TAG}{k}": f"{v:.6f}" for k, v in metrics.items()}}
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        version = client.create_model_version(
            name, f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
        )
        client.set_registered_model_alias(name, CANDIDATE, version.version)
    except MlflowException as e:
        raise RegistryError(f"cannot register {name} from run {run_id}: {e}") from e
    return RegisteredVersion(name, str(version.version), dict(tags))


def get_version(tracking_uri: str, name: str, alias_or_version: str) -> RegisteredVersion:
    """A version of `name` by number or alias."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        if alias_or_version.isdigit():
            found = client.get_model_version(name, alias_or_version)
        else:
            found = client.get_model_version_by_alias(name, alias_or_version)
    except MlflowException as e:
        raise RegistryError(f"no version {alias_or_version!r} of {name}: {e}") from e
    return RegisteredVersion(name, str(found.version), dict(found.tags))


def promote(
    tracking_uri: str,
    name: str,
    alias_or_version: str = CANDIDATE,
    *,
    floors: Mapping[str, float],
    tolerance: float = 0.0,
) -> RegisteredVersion:
    """Point ``champion`` at the version if its metrics pass `floors` and the champion's.

    A metric may trail the current champion's by at most `tolerance` (absolute).
    """
    candidate = get_version(tracking_uri, name, alias_or_version)
    metrics = candidate.metrics
    problems = [
        f"{key} {metrics.get(key, float('nan')):.4f} < floor {floor:.4f}"
        for key, floor in floors.items()
        if not metrics.get(key, float("-inf")) >= floor
    ]
    try:
        champion = get_version(tracking_uri, name, CHAMPION)
    except RegistryError:
        champion = None
    if champion is not None and champion.version != candidate.version:
        for key, value in champion.metrics.items():
            if key in metrics and metrics[key] < value - tolerance:
                problems.append(
                    f"{key} {metrics[key]:.4f} is below champion v{champion.version}'s {value:.4f}"
                )
    if problems:
        raise RegistryError(f"{name} v{candidate.version} not promoted: " + "; ".join(problems))
    from mlflow.exceptions import MlflowException

    try:
        _client(tracking_uri).set_registered_model_alias(name, CHAMPION, candidate.version)
    except MlflowException as e:
        raise RegistryError(f"cannot set {CHAMPION} on {name}: {e}") from e
    return candidate
