"""Pure building of the fleet's TUF metadata: Metadata objects in, new Metadata objects out.

No database and no files: `storage` loads a `RepoState`, a function here returns the roles it
changed (each re-signed with a new version), `storage` stores them. The layout is the one in the
brief both sides implement: top-level targets hold the model versions (offline key); they
delegate ``assignments/*`` to ``director`` (online key), which hash-bins the assignments over
``director-bin-*`` roles with `SuccinctRoles`. Every change re-signs what changed, then snapshot
(the versions of every targets role), then timestamp.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fleet_protocol.exceptions import TopicError
from fleet_protocol.topics import validate_device_id
from fleet_server.exceptions import RepositoryError
from fleet_server.repository.tuf_api import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signer,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
    UnsignedMetadataError,
)

DIRECTOR = "director"
BIN_PREFIX = "director-bin"
ASSIGNMENTS_PREFIX = "assignments/"
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
"""Top-level roles signed with the online key; director and its bins are online too."""

S = TypeVar("S", Root, Targets, Snapshot, Timestamp)


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's metadata is valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)
    director: timedelta = timedelta(days=30)
    """Director and every bin: online, re-signed by the server before they expire."""


@dataclass(frozen=True)
class RepoState:
    """The newest version of every role of the repository."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    director: Metadata[Targets]
    bins: dict[str, Metadata[Targets]] = field(default_factory=dict)

    def roles(self) -> dict[str, Metadata[Any]]:
        """Every role by name."""
        return {
            Root.type: self.root,
            Targets.type: self.targets,
            Snapshot.type: self.snapshot,
            Timestamp.type: self.timestamp,
            DIRECTOR: self.director,
            **self.bins,
        }

    def succinct_roles(self) -> SuccinctRoles:
        """The director's hash-bin delegation."""
        delegations = self.director.signed.delegations
        if delegations is None or delegations.succinct_roles is None:
            raise RepositoryError("the director role delegates to no bins")
        return delegations.succinct_roles

    def bin_of(self, device_id: str) -> str:
        """The bin that holds `device_id`'s assignment."""
        return self.succinct_roles().get_role_for_target(assignment_path(device_id))


@dataclass(frozen=True)
class Change:
    """What an operation produced: the new state and the roles it re-signed, in signing order."""

    state: RepoState
    changed: list[tuple[str, Metadata[Any]]]


def assignment_path(device_id: str) -> str:
    """The target path of a device's assignment; refuses ids that are not one topic level."""
    try:
        validate_device_id(device_id)
    except TopicError as e:
        raise RepositoryError(str(e)) from e
    return ASSIGNMENTS_PREFIX + device_id


def sign(metadata: Metadata[Any], signers: Iterable[Signer]) -> None:
    """Replace `metadata`'s signatures with one of each signer (a threshold co-signs)."""
    metadata.signatures.clear()
    for signer in signers:
        metadata.sign(signer, append=True)


def bumped(metadata: Metadata[S], lifetime: timedelta, now: datetime) -> Metadata[S]:
    """A copy of `metadata` one version on, expiring `lifetime` from `now`, not yet signed."""
    new = copy.deepcopy(metadata)
    new.signed.version += 1
    new.signed.expires = now + lifetime
    return new


def _new(signed: S) -> Metadata[S]:
    return Metadata(signed)


def check_threshold(role: str, keys: Sequence[object], threshold: int) -> None:
    """Refuse a threshold no set of `keys` can meet, or one of zero."""
    if not 1 <= threshold <= len(keys):
        raise RepositoryError(f"{role} threshold {threshold} needs 1 to {len(keys)} keys")


def initial_repository(
    *,
    root_keys: Sequence[Signer],
    root_threshold: int,
    targets_keys: Sequence[Signer],
    online: Signer,
    bin_bit_length: int,
    lifetimes: Lifetimes,
    now: datetime,
) -> RepoState:
    """Root v1 (threshold `root_threshold` of `root_keys`), targets v1, director, bins,
    snapshot and timestamp, each signed by the keys its role names."""
    check_threshold(Root.type, [s.public_key for s in root_keys], root_threshold)
    if not targets_keys:
        raise RepositoryError("targets needs at least one key")
    root = Root(expires=now + lifetimes.root, consistent_snapshot=True)
    for signer in root_keys:
        root.add_key(signer.public_key, Root.type)
    root.roles[Root.type].threshold = root_threshold
    for signer in targets_keys:
        root.add_key(signer.public_key, Targets.type)
    for role in ONLINE_ROLES:
        root.add_key(online.public_key, role)
    online_key = online.public_key
    targets = Targets(expires=now + lifetimes.targets)
    targets.delegations = Delegations(
        keys={online_key.keyid: online_key},
        roles={
            DIRECTOR: DelegatedRole(
                name=DIRECTOR,
                keyids=[online_key.keyid],
                threshold=1,
                terminating=True,
                paths=[ASSIGNMENTS_PREFIX + "*"],
            )
        },
    )
    succinct = SuccinctRoles(
        keyids=[online_key.keyid], threshold=1, bit_length=bin_bit_length, name_prefix=BIN_PREFIX
    )
    director = Targets(expires=now + lifetimes.director)
    director.delegations = Delegations(keys={online_key.keyid: online_key}, succinct_roles=succinct)
    bins = {name: _new(Targets(expires=now + lifetimes.director)) for name in succinct.get_roles()}
    state = RepoState(
        root=_new(root),
        targets=_new(targets),
        snapshot=_new(Snapshot(expires=now + lifetimes.snapshot)),
        timestamp=_new(Timestamp(expires=now + lifetimes.timestamp)),
        director=_new(director),
        bins=bins,
    )
    sign(state.root, root_keys)
    sign(state.targets, targets_keys)
    sign(state.director, [online])
    for metadata in bins.values():
        sign(metadata, [online])
    snapshot, timestamp = _snapshot_and_timestamp(state, online, lifetimes, now, bump=False)
    return replace(state, snapshot=snapshot, timestamp=timestamp)


def _snapshot_and_timestamp(
    state: RepoState, online: Signer, lifetimes: Lifetimes, now: datetime, *, bump: bool = True
) -> tuple[Metadata[Snapshot], Metadata[Timestamp]]:
    """Snapshot listing every targets role's version, and the timestamp naming that snapshot."""
    snapshot = bumped(state.snapshot, lifetimes.snapshot, now) if bump else state.snapshot
    meta = {f"{Targets.type}.json": MetaFile(version=state.targets.signed.version)}
    meta[f"{DIRECTOR}.json"] = MetaFile(version=state.director.signed.version)
    for name, metadata in sorted(state.bins.items()):
        meta[f"{name}.json"] = MetaFile(version=metadata.signed.version)
    snapshot.signed.meta = meta
    sign(snapshot, [online])
    timestamp = bumped(state.timestamp, lifetimes.timestamp, now) if bump else state.timestamp
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
    sign(timestamp, [online])
    return snapshot, timestamp


def with_snapshot(
    state: RepoState,
    changed: list[tuple[str, Metadata[Any]]],
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """`state` with a new snapshot and timestamp; `changed` with them appended."""
    snapshot, timestamp = _snapshot_and_timestamp(state, online, lifetimes, now)
    state = replace(state, snapshot=snapshot, timestamp=timestamp)
    return Change(state, [*changed, (Snapshot.type, snapshot), (Timestamp.type, timestamp)])


def add_model_target(
    state: RepoState,
    target: TargetFile,
    *,
    targets_keys: Sequence[Signer],
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """Targets with `target` added (signed with the offline targets keys), snapshot, timestamp.

    A path is published once: the same path with other bytes would make two devices that
    verified "the same" version run different models.
    """
    if target.path.startswith(ASSIGNMENTS_PREFIX):
        raise RepositoryError(f"{target.path}: assignments/ is the director's")
    if target.path in state.targets.signed.targets:
        raise RepositoryError(f"{target.path} is already published")
    targets = bumped(state.targets, lifetimes.targets, now)
    targets.signed.targets[target.path] = target
    sign(targets, targets_keys)
    check_signed_by_role(state.root, Targets.type, targets)
    state = replace(state, targets=targets)
    return with_snapshot(state, [(Targets.type, targets)], online, lifetimes, now)


def check_signed_by_role(root: Metadata[Root], role: str, metadata: Metadata[Any]) -> None:
    """Refuse metadata the current root would not accept for `role` (wrong or too few keys)."""
    try:
        root.signed.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    except (UnsignedMetadataError, ValueError) as e:
        raise RepositoryError(f"the keys given cannot sign {role}: {e}") from e


def set_assignments(
    state: RepoState,
    assignments: Sequence[TargetFile],
    *,
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """Each assignment placed in its device's bin (replacing what was there), then snapshot
    and timestamp; each touched bin gets one new version."""
    for assignment in assignments:
        if not assignment.path.startswith(ASSIGNMENTS_PREFIX):
            raise RepositoryError(f"{assignment.path} is not an assignment path")
        assignment_path(assignment.path.removeprefix(ASSIGNMENTS_PREFIX))
    return _edit_bins(
        state,
        {a.path: a for a in assignments},
        online=online,
        lifetimes=lifetimes,
        now=now,
    )


def clear_assignments(
    state: RepoState,
    device_ids: Sequence[str],
    *,
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """The devices' assignments removed (a device with none keeps what it runs)."""
    return _edit_bins(
        state,
        {assignment_path(device_id): None for device_id in device_ids},
        online=online,
        lifetimes=lifetimes,
        now=now,
    )


def _edit_bins(
    state: RepoState,
    edits: dict[str, TargetFile | None],
    *,
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    check_online_key(state, online)
    succinct = state.succinct_roles()
    bins = dict(state.bins)
    touched: dict[str, Metadata[Targets]] = {}
    for path, target in edits.items():
        name = succinct.get_role_for_target(path)
        if name not in touched:
            if name not in bins:
                raise RepositoryError(f"bin {name} of {path} is not in the repository")
            touched[name] = bumped(bins[name], lifetimes.director, now)
        if target is None:
            touched[name].signed.targets.pop(path, None)
        else:
            touched[name].signed.targets[path] = target
    for metadata in touched.values():
        sign(metadata, [online])
    bins.update(touched)
    state = replace(state, bins=bins)
    return with_snapshot(state, sorted(touched.items()), online, lifetimes, now)


def due(metadata: Metadata[Any], lifetime: timedelta, now: datetime) -> bool:
    """Whether less than a third of `lifetime` is left before `metadata` expires."""
    left: timedelta = metadata.signed.expires - now
    return left < lifetime / 3


def refresh_online_roles(
    state: RepoState, *, online: Signer, lifetimes: Lifetimes, now: datetime
) -> Change:
    """Re-sign the online roles that are due (director, bins, snapshot, timestamp).

    A re-signed director or bin makes a new snapshot, and a new snapshot a new timestamp; a
    timestamp alone is re-signed when it is due. Nothing due: no change.
    """
    check_online_key(state, online)
    changed: list[tuple[str, Metadata[Any]]] = []
    director = state.director
    if due(director, lifetimes.director, now):
        director = bumped(director, lifetimes.director, now)
        sign(director, [online])
        changed.append((DIRECTOR, director))
    bins = dict(state.bins)
    for name, metadata in sorted(state.bins.items()):
        if due(metadata, lifetimes.director, now):
            bins[name] = bumped(metadata, lifetimes.director, now)
            sign(bins[name], [online])
            changed.append((name, bins[name]))
    state = replace(state, director=director, bins=bins)
    if changed or due(state.snapshot, lifetimes.snapshot, now):
        return with_snapshot(state, changed, online, lifetimes, now)
    if due(state.timestamp, lifetimes.timestamp, now):
        timestamp = bumped(state.timestamp, lifetimes.timestamp, now)
        sign(timestamp, [online])
        return Change(replace(state, timestamp=timestamp), [(Timestamp.type, timestamp)])
    return Change(state, [])


def role_keyids(root: Metadata[Root], role: str) -> list[str]:
    """The keyids the root trusts for a top-level role."""
    role_info: Role = root.signed.roles[role]
    return list(role_info.keyids)


def check_online_key(state: RepoState, online: Signer) -> None:
    """Refuse an online key the root no longer trusts for timestamp (a retired key)."""
    if online.public_key.keyid not in role_keyids(state.root, Timestamp.type):
        raise RepositoryError(
            f"the online key {online.public_key.keyid[:12]}... is not trusted by root "
            f"v{state.root.signed.version}: install the current online key file"
        )
