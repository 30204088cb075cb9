"""Real bundles for the shadow-reading tests: the shipped default, and a worse copy of it.

The worse bundle is models/default with the classifier's speed labels permuted (it reads 50 as
another value), its detector sidecars renamed to a version of their own (so the frame loop's
ModelRef tells it apart), and its golden set re-recorded from its own readings, so that its
smoke test passes and only comparing it with the previous model shows what it gets wrong.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edge_agent.bundle import ModelMetadata, file_sha256, load_bundle, write_metadata
from edge_agent.golden import load_golden, load_golden_image, record_golden
from edge_agent.reading.signs import SignReader, load_reader
from tests.conftest import REPO_ROOT

DEFAULT = REPO_ROOT / "models" / "default"


def golden_frames() -> list[np.ndarray]:
    """The shipped bundle's golden images (RGB): scenes of planted signs, speed limits too."""
    return [load_golden_image(DEFAULT, entry) for entry in load_golden(DEFAULT).entries]


def copy_default(folder: Path, version: str) -> Path:
    """models/default without its training artifacts, its detector renamed to `version`."""
    shutil.copytree(DEFAULT, folder, ignore=shutil.ignore_patterns("training"))
    index = json.loads((folder / "bundle.json").read_text())
    index["version"] = version
    (folder / "bundle.json").write_text(json.dumps(index, indent=2))
    for relative in load_bundle(folder).detector.values():
        artifact = folder / relative
        sidecar = ModelMetadata.model_validate_json(artifact.with_suffix(".json").read_bytes())
        write_metadata(
            sidecar.model_copy(update={"version": version, "sha256": file_sha256(artifact)}),
            artifact.parent,
        )
    return folder


def worse_bundle(folder: Path, version: str = "worse-1") -> Path:
    """A copy of the default bundle that misreads speed values, its golden set re-recorded."""
    copy_default(folder, version)
    classifier = folder / "classifier" / "classifier.json"
    body = json.loads(classifier.read_text())
    speeds = body["outputs"]["speed"]
    assert speeds[0] == "none"
    # every speed class reads as the next one: 50 as 55, 130 as 5
    body["outputs"]["speed"] = ["none", *speeds[2:], speeds[1]]
    classifier.write_text(json.dumps(body, indent=2))
    record_golden(reader(folder), folder, golden_frames())
    return folder


def reader(bundle: Path, threads: int = 1) -> SignReader:
    """The bundle's reader on onnxruntime."""
    return load_reader(bundle, backend="onnxruntime", threads=threads)
