"""A real TUF repository served over HTTP, real tiny model bundles, and the OTA client on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import ModelMetadata, file_sha256, write_metadata
from edge_agent.ota.client import OtaClient
from edge_agent.reading.signs import load_reader
from tests.edge_agent.conftest import write_tiny_bundle
from tests.tuf_repository import ServerLog, TufRepository, bundle_tar

DEVICE = "cam-0001"
BUNDLE = "roadsign-tiny"


def versioned_bundle(folder: Path, version: str) -> Path:
    """A tiny real bundle whose index and detector sidecar carry `version` (so bytes differ)."""
    write_tiny_bundle(folder)
    index = json.loads((folder / "bundle.json").read_text())
    index.update(name=BUNDLE, version=version)
    (folder / "bundle.json").write_text(json.dumps(index))
    artifact = folder / "detector" / "onnx_int8" / "model.onnx"
    sidecar = ModelMetadata.model_validate_json(artifact.with_suffix(".json").read_bytes())
    write_metadata(
        sidecar.model_copy(update={"version": version, "sha256": file_sha256(artifact)}),
        artifact.parent,
    )
    record_golden_set(folder)
    return folder


def record_golden_set(folder: Path) -> bool:
    """Give the bundle the golden set its smoke test reads, where the agent has the check.

    edge_agent.golden arrives in its own change; until then a bundle has no golden set and the
    smoke test only loads and runs it. Whether one was written is returned.
    """
    try:
        from edge_agent import golden  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return False
    reader = load_reader(folder, backend="onnxruntime")
    golden.record_golden(reader, folder, [np.full((64, 64, 3), 128, np.uint8)])
    return True


@dataclass
class Served:
    """A repository, its URL and the server's journal."""

    repo: TufRepository
    url: str
    journal: ServerLog
    tmp: Path

    def bundle(self, version: str) -> bytes:
        """The tar bytes of a tiny bundle of `version`."""
        return bundle_tar(versioned_bundle(self.tmp / "bundles" / version, version))

    def publish_model(self, version: str, **assign: object) -> tuple[bytes, object]:
        """Add a model, assign it to DEVICE, publish; its bytes and TargetFile."""
        payload = self.bundle(version)
        info = self.repo.add_model(BUNDLE, version, payload)
        self.repo.assign(DEVICE, info, **assign)  # type: ignore[arg-type]
        self.repo.publish()
        return payload, info

    def client(self, state: Path | None = None) -> OtaClient:
        """An OTA client trusting the repository's root, state under tmp/state."""
        return OtaClient(
            repository_url=self.url,
            trusted_root=self.repo.trusted_root(),
            state_dir=state or self.tmp / "state",
            timeout_s=10,
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh real TUF repository in the contract's layout, served on a free port."""
    repo = TufRepository(tmp_path / "repo")
    with repo.serve() as (url, journal):
        yield Served(repo, url, journal, tmp_path)
