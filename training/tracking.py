"""Run tracking in MLflow: one run per stage, with params, metrics, manifests, git sha, artifacts.

A local SQLite store is the default (``sqlite:///.cache/mlflow/mlflow.db``); any ``http(s)://``
tracking server works the same. MLflow's own errors are wrapped into `TrackingError`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from training.data.manifest import DatasetManifest
from training.exceptions import TrainingError


class TrackingError(TrainingError):
    """The tracking store refused or failed an operation."""


def git_sha(repo: Path = Path()) -> str:
    """The commit the code runs at, with ``-dirty`` when there are local changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    # Fixed git commands with no outside input: S603 does not apply.
    try:
        sha = subprocess.run(  # noqa: S603
            [git, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def prepare_store(tracking_uri: str) -> None:
    """Create the folder of a local SQLite store; servers need nothing."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside it; MLflow's default is ./mlruns in the cwd."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return (database.parent / "artifacts").resolve().as_uri()
    return None


class Run:
    """An open MLflow run."""

    def __init__(self, mlflow: Any, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def params(self, values: Mapping[str, object]) -> None:
        """Log parameters (flattened ``a.b`` names)."""
        self._mlflow.log_params({k: str(v)[:6000] for k, v in values.items()})

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at `step`."""
        self._mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def manifests(self, manifests: Mapping[str, DatasetManifest]) -> None:
        """Log each dataset manifest as a JSON artifact and its hash as a tag."""
        for key, manifest in manifests.items():
            self._mlflow.log_text(manifest.to_json(), f"manifests/{key.replace('/', '.')}.json")
            self._mlflow.set_tag(f"manifest.{key}", manifest.manifest_sha256)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        """Upload a file or folder."""
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), folder)
        else:
            self._mlflow.log_artifact(str(path), folder)

    def tags(self, values: Mapping[str, str]) -> None:
        """Set tags."""
        self._mlflow.set_tags(dict(values))


@contextlib.contextmanager
def tracked_run(
    tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str] | None = None
) -> Iterator[Run]:
    """Open an MLflow run with the git sha tagged; it ends FAILED if the body raises."""
    import mlflow
    from mlflow.exceptions import MlflowException

    prepare_store(tracking_uri)
    try:
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
        mlflow.set_experiment(experiment)
        active = mlflow.start_run(run_name=run_name, tags={"git_sha": git_sha(), **(tags or {})})
    except MlflowException as e:
        raise TrackingError(f"cannot start an MLflow run at {tracking_uri}: {e}") from e
    try:
        yield Run(mlflow, active.info.run_id)
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def log_to_run(
    tracking_uri: str,
    run_id: str,
    *,
    metrics: Mapping[str, float],
    artifacts: Mapping[Path, str | None] | None = None,
) -> None:
    """Add metrics and files (path: artifact folder) to an existing, possibly finished, run.

    The bundle stage measures what an earlier stage's run produced: the numbers belong on that
    run, beside its training and validation metrics.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    prepare_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        for path, folder in (artifacts or {}).items():
            client.log_artifact(run_id, str(path), folder)
    except MlflowException as e:
        raise TrackingError(f"cannot log to MLflow run {run_id} at {tracking_uri}: {e}") from e
