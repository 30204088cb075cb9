"""Pure key rotation: a new root version, and what must be re-signed with the keys it names.

Per the TUF spec a client takes root N+1 only with a threshold of signatures of root N's root
keys and a threshold of N+1's own; each function refuses to build what a client would reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from fleet_server.exceptions import RepositoryError
from fleet_server.repository.builder import (
    DIRECTOR,
    Change,
    Lifetimes,
    RepoState,
    bumped,
    check_signed_by_role,
    check_threshold,
    role_keyids,
    sign,
    with_snapshot,
)
from fleet_server.repository.tuf_api import (
    Key,
    Metadata,
    Root,
    Signer,
    Snapshot,
    Targets,
    Timestamp,
)


def rotate_root(
    state: RepoState,
    *,
    remove: dict[str, Sequence[str]],
    add: dict[str, Sequence[Key]],
    thresholds: dict[str, int],
    signers: Sequence[Signer],
    lifetimes: Lifetimes,
    now: datetime,
) -> Metadata[Root]:
    """Root N+1 with keys removed from and added to roles, signed by `signers`.

    Per the TUF spec a client accepts it only when it carries a threshold of signatures of the
    OLD root's root keys and a threshold of the NEW root's root keys: `signers` must hold both
    (typically the old keys still trusted plus the new ones); anything less is refused here
    rather than published for every device to reject.
    """
    root = bumped(state.root, lifetimes.root, now)
    for role, keyids in remove.items():
        for keyid in keyids:
            if keyid not in root.signed.roles[role].keyids:
                raise RepositoryError(f"key {keyid} is not a {role} key")
            root.signed.revoke_key(keyid, role)
    for role, keys in add.items():
        for key in keys:
            root.signed.add_key(key, role)
    for role, threshold in thresholds.items():
        root.signed.roles[role].threshold = threshold
    for role, role_keys in root.signed.roles.items():
        check_threshold(role, role_keys.keyids, role_keys.threshold)
    sign(root, signers)
    result = root.signed.get_root_verification_result(
        state.root.signed, root.signed_bytes, root.signatures
    )
    if not result.verified:
        raise RepositoryError(
            f"root v{root.signed.version} needs {result.first.threshold} signature(s) of the old "
            f"root keys (has {len(result.first.signed)}) and {result.second.threshold} of the new "
            f"(has {len(result.second.signed)})"
        )
    return root


def resign_targets(
    state: RepoState,
    *,
    targets_keys: Sequence[Signer],
    online: Signer,
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """Targets one version on, signed with `targets_keys` (after a targets key rotation the new
    root names), then snapshot and timestamp."""
    targets = bumped(state.targets, lifetimes.targets, now)
    sign(targets, targets_keys)
    check_signed_by_role(state.root, Targets.type, targets)
    state = replace(state, targets=targets)
    return with_snapshot(state, [(Targets.type, targets)], online, lifetimes, now)


def rotate_online_key(
    state: RepoState,
    *,
    new_online: Signer,
    root_signers: Sequence[Signer],
    targets_keys: Sequence[Signer],
    lifetimes: Lifetimes,
    now: datetime,
) -> Change:
    """Replace the online key everywhere it is trusted: what a leaked server key needs.

    Root N+1 names the new key for snapshot and timestamp (signed by `root_signers`: the old
    and new root thresholds); targets, re-signed with the offline `targets_keys`, delegates the
    director to it; the director and every bin are re-signed with it, then snapshot and
    timestamp. A device that held the old root accepts the lot; metadata the old key signs
    afterwards is refused.
    """
    key = new_online.public_key
    online_roles = (Snapshot.type, Timestamp.type)
    root = rotate_root(
        state,
        remove={role: role_keyids(state.root, role) for role in online_roles},
        add={role: [key] for role in online_roles},
        thresholds=dict.fromkeys(online_roles, 1),
        signers=root_signers,
        lifetimes=lifetimes,
        now=now,
    )
    targets = bumped(state.targets, lifetimes.targets, now)
    delegations = targets.signed.delegations
    if delegations is None or delegations.roles is None or DIRECTOR not in delegations.roles:
        raise RepositoryError("targets does not delegate to the director")
    delegations.keys = {key.keyid: key}
    delegations.roles[DIRECTOR].keyids = [key.keyid]
    sign(targets, targets_keys)
    check_signed_by_role(root, Targets.type, targets)
    director = bumped(state.director, lifetimes.director, now)
    bin_roles = director.signed.delegations
    if bin_roles is None or bin_roles.succinct_roles is None:
        raise RepositoryError("the director role delegates to no bins")
    bin_roles.keys = {key.keyid: key}
    bin_roles.succinct_roles.keyids = [key.keyid]
    sign(director, [new_online])
    bins = {}
    for name, metadata in sorted(state.bins.items()):
        bins[name] = bumped(metadata, lifetimes.director, now)
        sign(bins[name], [new_online])
    changed: list[tuple[str, Metadata[Any]]] = [
        (Root.type, root),
        (Targets.type, targets),
        (DIRECTOR, director),
        *bins.items(),
    ]
    new_state = replace(state, root=root, targets=targets, director=director, bins=bins)
    return with_snapshot(new_state, changed, new_online, lifetimes, now)
