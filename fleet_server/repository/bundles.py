"""Model bundles as published: checked against their own index, packed into one tar.

A bundle folder holds ``bundle.json`` (name, version, the detector artifact of each format, the
classifier) and each artifact's sidecar (``<artifact>.json`` with its sha256 and companions).
The fleet server cannot import the agent, so the index and sidecars are read here as JSON.
Every hash is checked before anything is packed: a bundle is signed only as it was measured.
The tar is deterministic (sorted names, no owners, times or modes of the packing machine), so
publishing the same folder twice gives the same sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fleet_server.exceptions import BundleError

INDEX = "bundle.json"
LEFT_OUT = frozenset({"training"})
"""Top-level folders a device never reads (the torch checkpoint): not packed."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Bundle names and versions: one URL path segment each, never . or .."""
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BundleInfo:
    """What the index and sidecars of a checked bundle say."""

    name: str
    version: str
    formats: list[str]
    input_size: int
    source_run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BundleError(f"{what} {path} cannot be read as JSON: {e}") from e
    if not isinstance(data, dict):
        raise BundleError(f"{what} {path} is not a JSON object")
    return data


def _inside(root: Path, relative: object, what: str) -> Path:
    """`root / relative`, refusing anything that leaves the bundle folder."""
    if not isinstance(relative, str) or not relative:
        raise BundleError(f"{what} must be a relative path, not {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise BundleError(f"{what} {relative!r} leaves the bundle folder")
    return root / pure


def _checked_artifact(root: Path, relative: object, what: str) -> dict[str, Any]:
    """The sidecar of an artifact whose sha256 (and its companions') match it."""
    artifact = _inside(root, relative, what)
    sidecar = _json_object(artifact.with_suffix(".json"), f"sidecar of {what}")
    if sidecar.get("artifact") != artifact.name:
        raise BundleError(f"sidecar of {what} describes {sidecar.get('artifact')!r}")
    expected = {artifact.name: sidecar.get("sha256")}
    companions = sidecar.get("companions") or {}
    if not isinstance(companions, dict):
        raise BundleError(f"sidecar of {what}: companions is not an object")
    expected.update(companions)
    for name, digest in expected.items():
        path = _inside(artifact.parent, name, f"{what} companion")
        if not path.is_file():
            raise BundleError(f"{what}: {path} is missing")
        if _sha256(path) != digest:
            raise BundleError(f"{what}: {path} does not match the sha256 its sidecar names")
    return sidecar


def _metrics(*sources: object) -> dict[str, float]:
    found: dict[str, float] = {}
    for source in sources:
        if isinstance(source, dict):
            for key, value in source.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found[str(key)] = float(value)
    return found


def check_bundle(root: Path, *, max_bytes: int) -> BundleInfo:
    """Check a bundle folder: its size, its index and every artifact's sha256."""
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle folder")
    total = sum(path.stat().st_size for path in _packed_files(root))
    if total > max_bytes:
        raise BundleError(f"{root} holds {total} bytes; at most {max_bytes} are published")
    index = _json_object(root / INDEX, "bundle index")
    name, version = index.get("name"), index.get("version")
    for label, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            raise BundleError(f"bundle {label} {value!r} must match {NAME_PATTERN.pattern}")
    detectors = index.get("detector")
    if not isinstance(detectors, dict) or not detectors:
        raise BundleError(f"{root / INDEX} names no detector artifact")
    sidecars = {
        str(fmt): _checked_artifact(root, path, f"detector {fmt}")
        for fmt, path in detectors.items()
    }
    if index.get("classifier") is not None:
        _checked_artifact(root, index["classifier"], "classifier")
    first = next(iter(sidecars.values()))
    input_size = first.get("input_size")
    if not isinstance(input_size, int):
        raise BundleError("the detector sidecar names no integer input_size")
    run_id = first.get("source_run_id")
    metrics_file = root / "metrics.json"
    extra = _json_object(metrics_file, "metrics") if metrics_file.exists() else {}
    return BundleInfo(
        name=str(name),
        version=str(version),
        formats=sorted(sidecars),
        input_size=input_size,
        source_run_id=run_id if isinstance(run_id, str) else None,
        metrics=_metrics(first.get("metrics"), extra),
    )


def _packed_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in LEFT_OUT or path.is_symlink():
            continue  # a link could pack a file from outside the bundle
        if path.is_file():
            files.append(path)
    return files


def pack_bundle(root: Path) -> bytes:
    """The bundle folder as an uncompressed tar, the same bytes on every machine."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _packed_files(root):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as f:
                tar.addfile(info, f)
    return out.getvalue()
