"""The pure builder: every role it signs verifies against its delegator, versions move on only
where something changed, and what a client must refuse is refused before it is published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet_server.exceptions import RepositoryError
from fleet_server.repository import builder, rotation
from fleet_server.repository.builder import DIRECTOR, Lifetimes, RepoState
from fleet_server.repository.keys import generate_signer
from fleet_server.repository.tuf_api import CryptoSigner, Metadata, TargetFile

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIFETIMES = Lifetimes()


def _repo(roots: int = 3, threshold: int = 2) -> tuple[RepoState, list[CryptoSigner], CryptoSigner]:
    root_keys = [generate_signer() for _ in range(roots)]
    online = generate_signer()
    state = builder.initial_repository(
        root_keys=root_keys,
        root_threshold=threshold,
        targets_keys=[targets := generate_signer()],
        online=online,
        bin_bit_length=4,
        lifetimes=LIFETIMES,
        now=NOW,
    )
    return state, [*root_keys, targets], online


def _verify_all(state: RepoState) -> None:
    """Each role is signed by a threshold of the keys its delegator names."""
    root = state.root.signed
    root.verify_delegate("root", state.root.signed_bytes, state.root.signatures)
    for role in ("targets", "snapshot", "timestamp"):
        metadata: Metadata[Any] = state.roles()[role]
        root.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    state.targets.verify_delegate(DIRECTOR, state.director)
    for name, metadata in state.bins.items():
        state.director.signed.verify_delegate(name, metadata.signed_bytes, metadata.signatures)


def _model(path: str = "models/m/1/bundle.tar") -> TargetFile:
    return TargetFile.from_data(path, b"bundle bytes")


def test_a_new_repository_is_consistent_snapshot_with_sixteen_bins_all_verified() -> None:
    state, _, _ = _repo()
    assert state.root.signed.consistent_snapshot is True
    assert state.root.signed.roles["root"].threshold == 2
    assert len(state.bins) == 16
    assert state.targets.signed.delegations is not None
    director = state.targets.signed.delegations.roles[DIRECTOR]  # type: ignore[index]
    assert (director.terminating, director.paths) == (True, ["assignments/*"])
    assert sorted(state.snapshot.signed.meta) == sorted(
        ["targets.json", "director.json", *(f"{name}.json" for name in state.bins)]
    )
    _verify_all(state)


def test_an_assignment_re_signs_only_its_bin_then_snapshot_and_timestamp() -> None:
    state, _, online = _repo()
    target = TargetFile(12, {"sha256": "ab" * 32}, "assignments/cam-1")
    change = builder.set_assignments(state, [target], online=online, lifetimes=LIFETIMES, now=NOW)
    bin_name = state.bin_of("cam-1")
    assert [role for role, _ in change.changed] == [bin_name, "snapshot", "timestamp"]
    assert change.state.bins[bin_name].signed.version == 2
    assert change.state.bins[bin_name].signed.targets["assignments/cam-1"] == target
    assert change.state.snapshot.signed.meta[f"{bin_name}.json"].version == 2
    assert change.state.timestamp.signed.snapshot_meta.version == 2
    assert state.bins[bin_name].signed.version == 1  # the input is left as it was
    _verify_all(change.state)
    cleared = builder.clear_assignments(
        change.state, ["cam-1"], online=online, lifetimes=LIFETIMES, now=NOW
    )
    assert "assignments/cam-1" not in cleared.state.bins[bin_name].signed.targets


def test_a_model_path_is_published_once_and_assignments_paths_are_the_directors() -> None:
    state, signers, online = _repo()
    targets_key = signers[-1]
    change = builder.add_model_target(
        state, _model(), targets_keys=[targets_key], online=online, lifetimes=LIFETIMES, now=NOW
    )
    _verify_all(change.state)
    with pytest.raises(RepositoryError, match="already published"):
        builder.add_model_target(
            change.state,
            _model(),
            targets_keys=[targets_key],
            online=online,
            lifetimes=LIFETIMES,
            now=NOW,
        )
    with pytest.raises(RepositoryError, match="director"):
        builder.add_model_target(
            state,
            _model("assignments/cam-1"),
            targets_keys=[targets_key],
            online=online,
            lifetimes=LIFETIMES,
            now=NOW,
        )


def test_targets_signed_with_a_key_root_does_not_trust_are_refused() -> None:
    state, _, online = _repo()
    with pytest.raises(RepositoryError, match="cannot sign targets"):
        builder.add_model_target(
            state, _model(), targets_keys=[online], online=online, lifetimes=LIFETIMES, now=NOW
        )


def test_a_bad_device_id_is_refused_before_anything_is_signed() -> None:
    state, _, online = _repo()
    with pytest.raises(RepositoryError, match="device id"):
        builder.clear_assignments(state, ["a/b"], online=online, lifetimes=LIFETIMES, now=NOW)


def test_a_root_rotation_below_the_old_threshold_is_refused() -> None:
    state, signers, _ = _repo(roots=3, threshold=2)
    roots = signers[:3]
    new = generate_signer()
    with pytest.raises(RepositoryError, match="old root keys"):
        rotation.rotate_root(
            state,
            remove={"root": [roots[0].public_key.keyid]},
            add={"root": [new.public_key]},
            thresholds={},
            signers=[roots[1], new],  # 1 of the old 3 signs: under the old threshold of 2
            lifetimes=LIFETIMES,
            now=NOW,
        )
    rotated = rotation.rotate_root(
        state,
        remove={"root": [roots[0].public_key.keyid]},
        add={"root": [new.public_key]},
        thresholds={},
        signers=[roots[0], roots[1], new],
        lifetimes=LIFETIMES,
        now=NOW,
    )
    assert rotated.signed.version == 2
    assert new.public_key.keyid in rotated.signed.roles["root"].keyids


def test_refresh_re_signs_nothing_early_the_timestamp_when_due_and_more_when_they_are() -> None:
    state, _, online = _repo()
    early = builder.refresh_online_roles(
        state, online=online, lifetimes=LIFETIMES, now=NOW + timedelta(hours=15)
    )
    assert early.changed == []
    due = builder.refresh_online_roles(
        state, online=online, lifetimes=LIFETIMES, now=NOW + timedelta(hours=17)
    )
    assert [role for role, _ in due.changed] == ["timestamp"]
    assert due.state.timestamp.signed.expires == NOW + timedelta(hours=17, days=1)
    later = builder.refresh_online_roles(
        state, online=online, lifetimes=LIFETIMES, now=NOW + timedelta(days=21)
    )
    roles = [role for role, _ in later.changed]
    assert roles[0] == DIRECTOR
    assert set(roles) == {DIRECTOR, *state.bins, "snapshot", "timestamp"}
    _verify_all(later.state)
