"""Fetching a model bundle from MLflow's registry over its REST API, for ``models publish
--from-mlflow NAME@ALIAS``.

The alias resolves to a registered version (its number, run id and source ``runs:/RUN/PATH``);
the files under that artifact path are listed and downloaded into a folder, which is then
published like any bundle folder (its hashes checked against its own index first). Sizes come
from the listing, so a bundle over the limit is refused before any of it is downloaded. The
standard library's HTTP client suffices for three GET requests; the server install needs no
other.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fleet_server.exceptions import BundleError

TIMEOUT_S = 30.0
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_FILES = 1000
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RegisteredBundle:
    """A registered model version and where its bundle was downloaded."""

    name: str
    version: str
    run_id: str
    folder: Path


def parse_reference(reference: str) -> tuple[str, str]:
    """(name, alias) of ``NAME@ALIAS``."""
    name, at, alias = reference.rpartition("@")
    if not at or not name or not alias:
        raise BundleError(f"--from-mlflow takes NAME@ALIAS, not {reference!r}")
    return name, alias


def _open(url: str) -> Any:
    if not url.startswith(("http://", "https://")):
        raise BundleError(f"MLflow URL {url!r} is not http(s)")
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as e:
        raise BundleError(f"MLflow answered {e.code} to {url}: {e.read(500)!r}") from e
    except (urllib.error.URLError, OSError) as e:
        raise BundleError(f"cannot reach MLflow at {url}: {e}") from e


def _get_json(base: str, endpoint: str, query: dict[str, str]) -> dict[str, Any]:
    path = endpoint
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}"
    with _open(url) as response:
        body = response.read(MAX_JSON_BYTES + 1)
    if len(body) > MAX_JSON_BYTES:
        raise BundleError(f"MLflow's answer to {path} is larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError as e:
        raise BundleError(f"MLflow's answer to {path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise BundleError(f"MLflow's answer to {path} is not a JSON object")
    return data


def _artifact_path(source: str, run_id: str) -> str:
    prefix = f"runs:/{run_id}/"
    if not source.startswith(prefix):
        raise BundleError(f"registered source {source!r} is not an artifact of run {run_id}")
    return source.removeprefix(prefix).strip("/")


def _list_files(base: str, run_id: str, root: str) -> list[tuple[str, int]]:
    """(path, size) of every file under `root` in the run's artifacts."""
    found: list[tuple[str, int]] = []
    folders = [root]
    while folders:
        query = {"run_id": run_id, "path": folders.pop()}
        listing = _get_json(base, "/api/2.0/mlflow/artifacts/list", query)
        for entry in listing.get("files", []):
            if entry.get("is_dir"):
                folders.append(str(entry["path"]))
            else:
                found.append((str(entry["path"]), int(entry.get("file_size", 0))))
        if len(found) > MAX_FILES:
            raise BundleError(f"the registered bundle holds more than {MAX_FILES} files")
    return found


def _local_path(folder: Path, root: str, artifact: str) -> Path:
    relative = PurePosixPath(artifact).relative_to(root) if root else PurePosixPath(artifact)
    if relative.is_absolute() or ".." in relative.parts:
        raise BundleError(f"artifact {artifact!r} leaves the bundle folder")
    return folder / relative


def fetch_bundle(
    tracking_uri: str, reference: str, folder: Path, *, max_bytes: int
) -> RegisteredBundle:
    """Resolve ``NAME@ALIAS`` and download its bundle into `folder` (created, empty)."""
    name, alias = parse_reference(reference)
    base = tracking_uri.rstrip("/")
    query = {"name": name, "alias": alias}
    found = _get_json(base, "/api/2.0/mlflow/registered-models/alias", query)
    version = found.get("model_version") or {}
    run_id, number = version.get("run_id"), version.get("version")
    if not isinstance(run_id, str) or not run_id or number is None:
        raise BundleError(f"MLflow has no run behind {reference}")
    root = _artifact_path(str(version.get("source", "")), run_id)
    files = _list_files(base, run_id, root)
    total = sum(size for _, size in files)
    if total > max_bytes:
        raise BundleError(f"{reference} holds {total} bytes; at most {max_bytes} are published")
    folder.mkdir(parents=True, exist_ok=False)
    for artifact, size in files:
        target = _local_path(folder, root, artifact)
        target.parent.mkdir(parents=True, exist_ok=True)
        where = urllib.parse.urlencode({"path": artifact, "run_uuid": run_id})
        with _open(f"{base}/get-artifact?{where}") as response, target.open("wb") as out:
            # The listing said how large: never take more than that.
            shutil.copyfileobj(_Limited(response, size, artifact), out, _CHUNK)
    return RegisteredBundle(name=name, version=str(number), run_id=run_id, folder=folder)


class _Limited:
    """A reader that refuses to return more than `limit` bytes of `inner`."""

    def __init__(self, inner: Any, limit: int, name: str) -> None:
        self.inner, self.left, self.name = inner, limit, name

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes; a BundleError once the listed size is exceeded."""
        data: bytes = self.inner.read(size if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise BundleError(f"{self.name} is larger than MLflow's listing said")
        return data
