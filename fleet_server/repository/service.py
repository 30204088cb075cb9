"""The repository's operations: load the newest metadata, build, store, in one transaction.

Each function takes the caller's session and holds the repository's advisory lock until that
transaction ends, so replicas take turns; what it signs is committed with the rows that go with
it (a target's bytes, a model version) or not at all. Offline keys are passed in by the CLI
commands that read them; the online key is read from the settings' key file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from fleet_server import crud
from fleet_server.exceptions import BundleError, RepositoryError
from fleet_server.models import AssignmentsSigned, ModelVersion, utcnow
from fleet_server.repository import builder, rotation, storage
from fleet_server.repository.builder import Lifetimes, RepoState
from fleet_server.repository.bundles import check_bundle, pack_bundle
from fleet_server.repository.keys import load_signer
from fleet_server.repository.tuf_api import Key, Signer, TargetFile
from fleet_server.settings import RepositorySettings, ServerSettings

MODEL_PREFIX = "models/"
BUNDLE_FILE = "bundle.tar"


class UnknownModelError(RepositoryError):
    """The target an assignment names is not a published model."""


def lifetimes(settings: RepositorySettings) -> Lifetimes:
    """The roles' lifetimes the settings give."""
    return Lifetimes(
        root=timedelta(days=settings.root_expiry_days),
        targets=timedelta(days=settings.targets_expiry_days),
        snapshot=timedelta(days=settings.snapshot_expiry_days),
        timestamp=timedelta(seconds=settings.timestamp_expiry_s),
        director=timedelta(days=settings.director_expiry_days),
    )


@functools.lru_cache(maxsize=4)
def _cached_signer(path: str, mtime_ns: int, passphrase: str) -> Signer:
    # Decrypting a key file is deliberately slow (key derivation); once per file version.
    return load_signer(Path(path), passphrase)


def online_signer(settings: RepositorySettings) -> Signer:
    """The online key (snapshot, timestamp, director, bins) from the settings' key file."""
    path = settings.online_key_file
    if path is None:
        raise RepositoryError("tuf.online_key_file is not set: this process cannot sign")
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise RepositoryError(f"cannot read tuf.online_key_file {path}: {e}") from e
    return _cached_signer(str(path), mtime, settings.online_key_passphrase.get_secret_value())


def signed_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """The lineage as it can be signed: metrics as decimal strings.

    TUF signs canonical JSON (OLPC), which has no floats: a float anywhere in a custom field
    makes the metadata unserialisable. ``repr`` of a float reads back as the same float.
    """
    metrics = {name: repr(float(value)) for name, value in lineage["metrics"].items()}
    return {**lineage, "metrics": metrics}


def model_target_path(name: str, version: str) -> str:
    """Where a model version's bundle is in the repository."""
    return f"{MODEL_PREFIX}{name}/{version}/{BUNDLE_FILE}"


def initialise(
    session: Session,
    settings: ServerSettings,
    *,
    root_keys: Sequence[Signer],
    root_threshold: int,
    targets_keys: Sequence[Signer],
    online: Signer,
    now: datetime | None = None,
) -> RepoState:
    """Store a new repository: root v1 and every other role at version 1."""
    crud.lock_repository(session)
    if storage.is_initialised(session):
        raise RepositoryError("the TUF repository is already initialised")
    state = builder.initial_repository(
        root_keys=root_keys,
        root_threshold=root_threshold,
        targets_keys=targets_keys,
        online=online,
        bin_bit_length=settings.tuf.bin_bit_length,
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store_state(session, state)
    return state


def publish_bundle(
    session: Session,
    settings: ServerSettings,
    *,
    bundle_dir: Path,
    targets_keys: Sequence[Signer],
    online: Signer,
    min_agent_version: str,
    registered_model: str | None = None,
    registered_version: str | None = None,
    mlflow_run_id: str | None = None,
    now: datetime | None = None,
) -> ModelVersion:
    """Check and pack a bundle folder, add it as the next release, sign targets and the rest."""
    info = check_bundle(bundle_dir, max_bytes=settings.tuf.max_bundle_bytes)
    content = pack_bundle(bundle_dir)
    crud.lock_repository(session)
    if crud.find_model_version(session, name=info.name, version=info.version) is not None:
        raise BundleError(f"{info.name} {info.version} is already published")
    state = storage.load_state(session)
    release = crud.next_release(session)
    path = model_target_path(info.name, info.version)
    lineage: dict[str, Any] = {
        "kind": "model",
        "name": info.name,
        "version": info.version,
        "release": release,
        "formats": info.formats,
        "input_size": info.input_size,
        "mlflow_run_id": mlflow_run_id or info.source_run_id,
        "registered_model": registered_model,
        "registered_version": registered_version,
        "metrics": info.metrics,
        "min_agent_version": min_agent_version,
    }
    custom = {"roadsign": signed_lineage(lineage)}
    target = TargetFile.from_data(path, content)
    target.hashes = {"sha256": target.hashes["sha256"]}  # the one hash both sides compare
    target.unrecognized_fields["custom"] = custom
    change = builder.add_model_target(
        state,
        target,
        targets_keys=targets_keys,
        online=online,
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store(session, change.changed)
    crud.add_target(
        session, path=path, sha256=target.hashes["sha256"], content=content, custom=custom
    )
    model = ModelVersion(
        name=info.name, version=info.version, release=release, target_path=path, lineage=lineage
    )
    return crud.add_model_version(session, model=model)


def assign(
    session: Session,
    settings: ServerSettings,
    device_ids: Sequence[str],
    target_path: str,
    rollback: bool,
    rollout_id: str | None,
    *,
    online: Signer | None = None,
    now: datetime | None = None,
) -> AssignmentsSigned:
    """Sign, in the director's bins, that each device must run the model at `target_path`.

    The assignment carries the model target's exact length and hashes and its release, so a
    device can refuse a director that names bytes the offline-signed targets do not.
    """
    crud.lock_repository(session)
    state = storage.load_state(session)
    model = state.targets.signed.targets.get(target_path)
    if model is None or not target_path.startswith(MODEL_PREFIX):
        raise UnknownModelError(f"{target_path} is not a published model target")
    lineage = model.custom.get("roadsign", {}) if isinstance(model.custom, dict) else {}
    unique = list(dict.fromkeys(device_ids))
    assignments = []
    for device_id in unique:
        assignment = TargetFile(
            length=model.length,
            hashes=dict(model.hashes),
            path=builder.assignment_path(device_id),
            unrecognized_fields={
                "custom": {
                    "roadsign": {
                        "kind": "assignment",
                        "device_id": device_id,
                        "target": target_path,
                        "version": lineage.get("version"),
                        "release": lineage.get("release"),
                        "rollback": rollback,
                        "rollout_id": rollout_id,
                    }
                }
            },
        )
        assignments.append(assignment)
    change = builder.set_assignments(
        state,
        assignments,
        online=online or online_signer(settings.tuf),
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store(session, change.changed)
    return AssignmentsSigned(
        target_path=target_path,
        device_ids=unique,
        bins=[role for role, _ in change.changed if role.startswith(builder.BIN_PREFIX)],
        snapshot_version=change.state.snapshot.signed.version,
    )


def clear_assignments(
    session: Session,
    settings: ServerSettings,
    device_ids: Sequence[str],
    *,
    online: Signer | None = None,
    now: datetime | None = None,
) -> None:
    """Remove the devices' assignments: each keeps what it runs."""
    crud.lock_repository(session)
    change = builder.clear_assignments(
        storage.load_state(session),
        device_ids,
        online=online or online_signer(settings.tuf),
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store(session, change.changed)


def refresh_timestamp_if_due(
    session: Session,
    settings: ServerSettings,
    *,
    online: Signer | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Re-sign the timestamp (and any other online role) with under a third of its life left.

    Returns the roles re-signed; none when nothing is due. Under the advisory lock, so of
    replicas checking at once one re-signs and the others then find nothing due.
    """
    crud.lock_repository(session)
    if not storage.is_initialised(session):
        return []
    change = builder.refresh_online_roles(
        storage.load_state(session),
        online=online or online_signer(settings.tuf),
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store(session, change.changed)
    return [role for role, _ in change.changed]


def rotate_root(
    session: Session,
    settings: ServerSettings,
    *,
    remove: dict[str, Sequence[str]],
    add: dict[str, Sequence[Key]],
    signers: Sequence[Signer],
    thresholds: dict[str, int] | None = None,
    targets_keys: Sequence[Signer] = (),
    online: Signer | None = None,
    now: datetime | None = None,
) -> int:
    """Store root N+1 (keys removed and added); returns N+1.

    When the targets keys change, targets is re-signed with `targets_keys` (the new ones) in
    the same transaction, with snapshot and timestamp, so clients never see a targets role
    signed by a key the root no longer trusts.
    """
    crud.lock_repository(session)
    state = storage.load_state(session)
    when = now or utcnow()
    root = rotation.rotate_root(
        state,
        remove=remove,
        add=add,
        thresholds=thresholds or {},
        signers=signers,
        lifetimes=lifetimes(settings.tuf),
        now=when,
    )
    changed: list[tuple[str, Any]] = [("root", root)]
    if "targets" in remove or "targets" in add:
        change = rotation.resign_targets(
            dataclasses.replace(state, root=root),
            targets_keys=targets_keys,
            online=online or online_signer(settings.tuf),
            lifetimes=lifetimes(settings.tuf),
            now=when,
        )
        changed += change.changed
    storage.store(session, changed)
    return int(root.signed.version)


def rotate_online_key(
    session: Session,
    settings: ServerSettings,
    *,
    new_online: Signer,
    root_signers: Sequence[Signer],
    targets_keys: Sequence[Signer],
    now: datetime | None = None,
) -> int:
    """Store root N+1 trusting `new_online` for every online role, and everything re-signed
    with it; returns N+1."""
    crud.lock_repository(session)
    change = rotation.rotate_online_key(
        storage.load_state(session),
        new_online=new_online,
        root_signers=root_signers,
        targets_keys=targets_keys,
        lifetimes=lifetimes(settings.tuf),
        now=now or utcnow(),
    )
    storage.store(session, change.changed)
    return int(change.state.root.signed.version)
