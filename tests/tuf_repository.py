"""A real TUF repository in the fleet's layout, built with python-tuf, served over real HTTP.

Tests of the agent's OTA client use it instead of the fleet server: root (2 of 3 keys) and
targets keys are "offline", one online key signs snapshot, timestamp, the ``director`` role and
its ``director-bin-*`` succinct bins. Metadata and consistent-snapshot targets are written to a
folder and served by ``http.server`` in a thread, with ``Range: bytes=N-`` support, a log of the
requests it answered, and switches that play an attacker: extra bytes after a target, a
connection cut half-way, a file replaced.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import ssl
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

DIRECTOR = "director"
BIN_PREFIX = "director-bin"


def _expiry(days: float = 30) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


def bundle_tar(folder: Path) -> bytes:
    """An uncompressed tar of a bundle folder, members relative to it (bundle.json at the top)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


@dataclass
class ServerLog:
    """What the HTTP server answered, and what it was told to do wrong."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    extra_bytes: dict[str, bytes] = field(default_factory=dict)
    """Request path suffix -> bytes appended after the file (endless data)."""
    cut_after: dict[str, int] = field(default_factory=dict)
    """Request path suffix -> bytes sent before the connection is dropped (once)."""
    down: bool = False
    """Answer every request with 503."""
    hangups: list[str] = field(default_factory=list)
    """Paths whose client hung up before the whole answer was sent."""

    def paths(self) -> list[str]:
        """The paths asked for, in order."""
        return [path for path, _ in self.requests]


class TufRepository:
    """The contract's repository: top-level roles, model targets, director assignments in bins."""

    def __init__(self, folder: Path, *, bit_length: int = 4) -> None:
        self.folder = folder
        self.metadata_dir = folder / "metadata"
        self.targets_dir = folder / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.root_signers = [CryptoSigner.generate_ed25519() for _ in range(3)]
        self.targets_signer = CryptoSigner.generate_ed25519()
        self.online = CryptoSigner.generate_ed25519()
        self.timestamp_days: float = 1

        root = Root(expires=_expiry(365), consistent_snapshot=True)
        for signer in self.root_signers:
            root.add_key(signer.public_key, Root.type)
        root.roles[Root.type].threshold = 2
        root.add_key(self.targets_signer.public_key, Targets.type)
        for role in (Snapshot.type, Timestamp.type):
            root.add_key(self.online.public_key, role)
        self.root = Metadata(root)

        online_id = self.online.public_key.keyid
        self.targets = Metadata(Targets(expires=_expiry()))
        self.targets.signed.delegations = Delegations(
            keys={online_id: self.online.public_key},
            roles={
                DIRECTOR: DelegatedRole(
                    name=DIRECTOR,
                    keyids=[online_id],
                    threshold=1,
                    terminating=True,
                    paths=["assignments/*"],
                )
            },
        )
        self.succinct = SuccinctRoles(
            keyids=[online_id], threshold=1, bit_length=bit_length, name_prefix=BIN_PREFIX
        )
        self.director = Metadata(Targets(expires=_expiry()))
        self.director.signed.delegations = Delegations(
            keys={online_id: self.online.public_key}, succinct_roles=self.succinct
        )
        self.bins: dict[str, Metadata[Targets]] = {
            name: Metadata(Targets(expires=_expiry())) for name in self.succinct.get_roles()
        }
        self.snapshot = Metadata(Snapshot(expires=_expiry()))
        self.timestamp = Metadata(Timestamp(expires=_expiry(self.timestamp_days)))
        self.release = 0
        self._dirty: set[str] = {Targets.type, DIRECTOR, *self.bins}
        self._first = True
        self.signers: dict[str, Signer] = {}
        """Role -> a signer used instead of the right one (a wrong-key attack)."""
        self._write_root()
        self.publish()

    # -- what the server side publishes ------------------------------------------------------

    def trusted_root(self) -> bytes:
        """The root a device is enrolled with (version 1)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    def add_model(
        self, name: str, version: str, payload: bytes, *, release: int | None = None
    ) -> TargetFile:
        """Publish a model bundle target (offline key) with the contract's custom."""
        if release is None:
            self.release += 1
            release = self.release
        path = f"models/{name}/{version}/bundle.tar"
        info = TargetFile.from_data(path, payload, ["sha256"])
        info.unrecognized_fields["custom"] = {
            "roadsign": {
                "kind": "model",
                "name": name,
                "version": version,
                "release": release,
                "formats": ["onnx_int8"],
                "input_size": 64,
                "mlflow_run_id": None,
                "registered_model": None,
                "registered_version": None,
                "metrics": {},
                "min_agent_version": "0.1.0",
            }
        }
        self.write_target(info, payload)
        self.targets.signed.targets[path] = info
        self._dirty.add(Targets.type)
        return info

    def write_target(self, info: TargetFile, payload: bytes) -> Path:
        """Put bytes where the consistent-snapshot URL of `info` points."""
        directory, _, basename = info.path.rpartition("/")
        target = self.targets_dir / directory / f"{info.hashes['sha256']}.{basename}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        return target

    def assign(
        self,
        device_id: str,
        model: TargetFile,
        *,
        rollback: bool = False,
        rollout_id: str | None = None,
        signed_for: str | None = None,
        length: int | None = None,
        sha256: str | None = None,
        release: int | None = None,
    ) -> TargetFile:
        """Sign (online key) `device_id`'s assignment to `model`; the keywords forge fields."""
        body = model.custom["roadsign"]
        path = f"assignments/{device_id}"
        info = TargetFile(
            length=model.length if length is None else length,
            hashes={"sha256": sha256 or model.hashes["sha256"]},
            path=path,
            unrecognized_fields={
                "custom": {
                    "roadsign": {
                        "kind": "assignment",
                        "device_id": signed_for or device_id,
                        "target": model.path,
                        "version": body["version"],
                        "release": body["release"] if release is None else release,
                        "rollback": rollback,
                        "rollout_id": rollout_id,
                    }
                }
            },
        )
        bin_name = self.succinct.get_role_for_target(path)
        self.bins[bin_name].signed.targets[path] = info
        self._dirty.add(bin_name)
        return info

    def unassign(self, device_id: str) -> None:
        """Take a device's assignment away."""
        path = f"assignments/{device_id}"
        bin_name = self.succinct.get_role_for_target(path)
        self.bins[bin_name].signed.targets.pop(path, None)
        self._dirty.add(bin_name)

    def publish(self) -> None:
        """Re-sign what changed, then snapshot and timestamp, and write them where served."""
        roles: dict[str, Metadata[Targets]] = {
            Targets.type: self.targets,
            DIRECTOR: self.director,
            **self.bins,
        }
        for name in sorted(self._dirty):
            metadata = roles[name]
            if not self._first:
                metadata.signed.version += 1
            metadata.signed.expires = _expiry()
            self._sign(name, metadata, self.targets_signer if name == Targets.type else self.online)
            self._write(f"{metadata.signed.version}.{name}.json", metadata)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(version=metadata.signed.version)
        self._dirty.clear()
        self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        if not self._first:
            self.snapshot.signed.version += 1
            self.timestamp.signed.version += 1
        self._first = False
        self.snapshot.signed.expires = _expiry()
        self._sign(Snapshot.type, self.snapshot, self.online)
        self._write(f"{self.snapshot.signed.version}.snapshot.json", self.snapshot)
        self.timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
        self.timestamp.signed.expires = (
            datetime.now(UTC) + timedelta(days=self.timestamp_days)
        ).replace(microsecond=0)
        self._sign(Timestamp.type, self.timestamp, self.online)
        self._write("timestamp.json", self.timestamp)

    def point_snapshot_at_old_targets(self, version: int) -> None:
        """A holder of the online key re-points snapshot at an older targets version."""
        self.snapshot.signed.meta["targets.json"] = MetaFile(version=version)
        self._publish_snapshot()

    def copy_metadata(self) -> dict[str, bytes]:
        """Every served metadata file, to serve again later (a replay)."""
        return {p.name: p.read_bytes() for p in self.metadata_dir.iterdir()}

    def restore_metadata(self, files: dict[str, bytes]) -> None:
        """Serve exactly `files` again as the metadata (an attacker replaying an old state)."""
        shutil.rmtree(self.metadata_dir)
        self.metadata_dir.mkdir()
        for name, data in files.items():
            (self.metadata_dir / name).write_bytes(data)

    def _sign(self, role: str, metadata: Metadata[Any], signer: Signer) -> None:
        metadata.signatures.clear()
        metadata.sign(self.signers.get(role, signer), append=True)

    def _write(self, name: str, metadata: Metadata[Any]) -> None:
        (self.metadata_dir / name).write_bytes(metadata.to_bytes(JSONSerializer(compact=False)))

    def _write_root(self) -> None:
        self.root.signatures.clear()
        for signer in self.root_signers[:2]:
            self.root.sign(signer, append=True)
        self._write(f"{self.root.signed.version}.root.json", self.root)

    # -- serving -----------------------------------------------------------------------------

    @contextmanager
    def serve(self, *, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, ServerLog]]:
        """Serve metadata at ``<url>/tuf/metadata/`` and targets at ``<url>/tuf/targets/``;
        over HTTPS with `tls` (certificate file, key file)."""
        journal = ServerLog()
        folder = self.folder
        handler = type("Handler", (_Handler,), {"folder": folder, "journal": journal})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="tuf-http", daemon=True
        )
        thread.start()
        try:
            yield f"{scheme}://127.0.0.1:{server.server_address[1]}", journal
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET of the repository folder, with Range and the journal's attacks."""

    folder: Path
    journal: ServerLog

    def log_message(self, format: str, *args: object) -> None:
        return  # the journal keeps what tests look at

    def do_GET(self) -> None:
        self.journal.requests.append((self.path, dict(self.headers.items())))
        if self.journal.down:
            self._status(503)
            return
        prefix = "/tuf/"
        relative = self.path.split("?", 1)[0]
        if not relative.startswith(prefix) or ".." in relative:
            self._status(404)
            return
        path = self.folder / relative[len(prefix) :]
        if not path.is_file():
            self._status(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes=") and header.endswith("-"):
            start = int(header[len("bytes=") : -1])
        extra = next((v for k, v in self.journal.extra_bytes.items() if relative.endswith(k)), b"")
        body = data[start:] + extra
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = next((k for k in self.journal.cut_after if relative.endswith(k)), None)
        try:
            if cut is not None:
                self.wfile.write(body[: self.journal.cut_after.pop(cut)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # A client that stops reading (as the agent does past a target's signed length).
            self.journal.hangups.append(self.path)
            self.close_connection = True

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def sha256(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
