"""``make demo``'s model registry: a private MLflow server, the shipped bundle registered there
with its lineage as training registers its exports, and the fleet's TUF repository publishing it
from the registry alias (``roadsign-fleet models publish --from-mlflow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from demo_stack import ROOT, WORK, DemoError, Stack, free_port, wait_for

REGISTERED_MODEL = "roadsign-bundle"
ALIAS = "champion"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_mlflow(stack: Stack) -> str:
    """An MLflow server (SQLite store, proxied local artifacts) on a free port; its URL.

    It is not waited for here: it starts while the fleet server does (`wait_mlflow`).
    """
    port = free_port()
    root = WORK / "mlflow"
    root.mkdir()
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    stack.start("mlflow", argv)
    return f"http://127.0.0.1:{port}"


def wait_mlflow(stack: Stack, url: str) -> None:
    """Until the MLflow server answers its health check; fail with its log if it died."""
    log = WORK / "mlflow.log"
    wait_for("the MLflow server", lambda: _healthy(url) or not stack.running("mlflow"), 120, log)
    if not stack.running("mlflow"):
        raise DemoError(f"the MLflow server exited\n{log.read_text(errors='replace')[-2000:]}")


def lineage_of(bundle: Path, run_id: str, git_sha: str) -> tuple[dict[str, str], dict[str, float]]:
    """The lineage tags and metrics a bundle's registered version carries.

    As training tags its exports: the run that logged it, the git sha, the format and the
    artifact's hash; here also the training runs the bundle's metrics.json names, and its
    numeric scores as metrics.
    """
    metadata = json.loads((bundle / "bundle.json").read_text())
    scores = json.loads((bundle / "metrics.json").read_text())
    lineage = {
        "run_id": run_id,
        "git_sha": git_sha,
        "format": "bundle",
        "bundle.name": str(metadata["name"]),
        "bundle.version": str(metadata["version"]),
        **{f"training_run.{stage}": str(run) for stage, run in scores.get("runs", {}).items()},
    }
    metrics = {
        key: float(value)
        for key, value in scores.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return lineage, metrics


def register_bundle(url: str, bundle: Path) -> str:
    """Log `bundle` in a run, register it as the next version of the bundle model, alias it
    champion; the version number."""
    from training.registry import promote, register_version
    from training.tracking import git_sha, tracked_run

    with tracked_run(url, "roadsign-demo", f"bundle-{bundle.name}", {"stage": "demo"}) as run:
        run.artifact(bundle, "bundle")
        lineage, metrics = lineage_of(bundle, run.run_id, git_sha(ROOT))
        run.tags(lineage)
    version = register_version(
        url,
        REGISTERED_MODEL,
        run_id=run.run_id,
        artifact_path="bundle",
        lineage=lineage,
        metrics=metrics,
    )
    # No floors: the demo ships what it registered; training's gates came before the bundle.
    promote(url, REGISTERED_MODEL, version.version, floors={})
    return version.version


def publish_from_registry(settings_file: Path, keys: Path, passphrase: str) -> dict[str, object]:
    """``roadsign-fleet models publish --from-mlflow`` of the champion; the published version."""
    command = [sys.executable, "-m", "fleet_server.cli", "models", "publish"]
    command += ["--from-mlflow", f"{REGISTERED_MODEL}@{ALIAS}", "--keys-dir", str(keys)]
    command += ["--config", str(settings_file)]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "ROADSIGN_FLEET_KEYS_PASSPHRASE": passphrase},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"models publish --from-mlflow failed:\n{result.stderr[-2000:]}")
    published: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return published


def init_keys(settings_file: Path, keys: Path, passphrase: str) -> None:
    """``roadsign-fleet keys init``: the TUF repository's keys and root, in the demo's database."""
    command = [sys.executable, "-m", "fleet_server.cli", "keys", "init", "--dir", str(keys)]
    command += ["--root-keys", "1", "--root-threshold", "1", "--config", str(settings_file)]
    subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "ROADSIGN_FLEET_KEYS_PASSPHRASE": passphrase},
        check=True,
        stdout=subprocess.DEVNULL,
    )
