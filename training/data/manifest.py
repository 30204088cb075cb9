"""Dataset manifests: what a dataset holds, and a hash that changes when any file or label does.

A manifest is logged with every training run, so a model traces back to the exact bytes and labels
it learnt from. `files_sha256` hashes the sorted list of (relative path, content sha256);
`labels_sha256` hashes every box; `manifest_sha256` hashes the whole manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.data.records import LabeledImage
from training.exceptions import DatasetError

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    return digest.hexdigest()


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": float(min(values)),
        "median": float(statistics.median(values)),
        "max": float(max(values)),
    }


def _relative(path: Path, root: str) -> str:
    # Absolute paths by string, not resolve(): resolving stats every component of every file,
    # which took most of a manifest's time on the real sets (hundreds of thousands of files).
    absolute = os.path.abspath(path)
    if absolute.startswith(root + os.sep):
        return Path(absolute[len(root) + 1 :]).as_posix()
    return Path(absolute).as_posix()


@dataclass(frozen=True)
class DatasetManifest:
    """What one dataset (or one split of it) holds."""

    name: str
    root: str
    images: int
    boxes: int
    background_images: int
    groups: int
    class_counts: dict[str, int]
    sources: dict[str, int]
    image_width: dict[str, float]
    image_height: dict[str, float]
    box_height: dict[str, float]
    files_sha256: str
    labels_sha256: str
    manifest_sha256: str = field(default="")

    def to_json(self) -> str:
        """Stable, sorted JSON of the manifest."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> Path:
        """Write the JSON to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def build_manifest(name: str, root: Path, images: Iterable[LabeledImage]) -> DatasetManifest:
    """Count, measure and hash `images`; paths are recorded relative to `root`."""
    base = os.path.abspath(root)
    named = sorted(((_relative(image.path, base), image) for image in images), key=lambda p: p[0])
    if not named:
        raise DatasetError(f"dataset {name!r} is empty")
    records = [image for _, image in named]
    files = hashlib.sha256()
    labels = hashlib.sha256()
    for relative, image in named:
        files.update(f"{relative}\t{file_sha256(image.path)}\n".encode())
        boxes = ";".join(
            f"{b.label},{b.x1:.2f},{b.y1:.2f},{b.x2:.2f},{b.y2:.2f},{b.speed_value},{b.speed_unit}"
            for b in image.boxes
        )
        labels.update(f"{relative}\t{image.group}\t{boxes}\n".encode())
    manifest = DatasetManifest(
        name=name,
        root=str(root),
        images=len(records),
        boxes=sum(len(image.boxes) for image in records),
        background_images=sum(1 for image in records if not image.boxes),
        groups=len({image.group for image in records}),
        class_counts=dict(sorted(Counter(b.label for i in records for b in i.boxes).items())),
        sources=dict(sorted(Counter(image.source for image in records).items())),
        image_width=_stats([image.width for image in records]),
        image_height=_stats([image.height for image in records]),
        box_height=_stats([b.height for image in records for b in image.boxes]),
        files_sha256=files.hexdigest(),
        labels_sha256=labels.hexdigest(),
    )
    whole = hashlib.sha256(manifest.to_json().encode()).hexdigest()
    return DatasetManifest(**{**asdict(manifest), "manifest_sha256": whole})
