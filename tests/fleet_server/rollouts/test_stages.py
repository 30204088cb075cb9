"""Rollout stages: sizes (cumulative, at least one device, 100% is all), a device order that
no listing order or restart changes, spec validation, stages that add no devices."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet_server.rollouts.engine import (
    new_rollout,
    rollout_order,
    stage_devices,
    stage_sizes,
)
from fleet_server.rollouts.values import (
    EventKind,
    RolloutCommand,
    RolloutDevice,
    RolloutSpec,
    StageSpec,
)
from tests.fleet_server.rollouts.rollout_rig import (
    NEW,
    OLD,
    RID,
    SOAK,
    Rig,
    assigned,
    kinds,
    make_spec,
)


def test_one_percent_of_twenty_devices_is_one_device_and_stages_are_cumulative() -> None:
    stages = [StageSpec(percent=p) for p in (1, 10, 50, 100)]
    assert stage_sizes(20, stages) == (1, 2, 10, 20)
    assert stage_sizes(30, [StageSpec(percent=10)]) == (3,)  # not 4 from 3.0000000000000004
    counts = [StageSpec(count=5), StageSpec(count=3), StageSpec(percent=100)]
    assert stage_sizes(4, counts) == (4, 4, 4)  # never fewer than before, never more than all


@given(
    n=st.integers(min_value=1, max_value=5000),
    percents=st.lists(st.floats(min_value=0.01, max_value=100), min_size=1, max_size=6),
)
def test_stage_sizes_grow_start_at_one_and_a_last_stage_of_100_percent_covers_all(
    n: int, percents: list[float]
) -> None:
    sizes = stage_sizes(n, [StageSpec(percent=p) for p in [*sorted(percents), 100]])
    assert sizes[0] >= 1
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert sizes[-1] == n
    assert all(size >= n * p / 100 - 1e-6 for size, p in zip(sizes, sorted(percents), strict=False))


def test_stage_devices_are_the_same_whatever_order_they_were_listed_in() -> None:
    spec = make_spec()
    backwards = spec.model_copy(update={"devices": tuple(reversed(spec.devices))})
    first, second = new_rollout(spec), new_rollout(backwards)
    assert first.devices == second.devices
    assert [r.device_id for r in first.devices] == rollout_order(
        RID, [d.device_id for d in spec.devices]
    )
    other = new_rollout(make_spec(rollout_id="another"))
    assert [r.device_id for r in other.devices] != [r.device_id for r in first.devices]
    per_stage = [len(stage_devices(first, i)) for i in range(4)]
    assert per_stage == [1, 1, 8, 10]


def test_without_hash_spreading_the_given_order_is_kept() -> None:
    spec = make_spec().model_copy(update={"spread_by_hash": False})
    assert [r.device_id for r in new_rollout(spec).devices] == [d.device_id for d in spec.devices]


def test_a_spec_refuses_duplicate_devices_devices_already_newer_and_ambiguous_stages() -> None:
    device = RolloutDevice(device_id="a", previous=OLD)
    with pytest.raises(ValidationError, match="listed twice"):
        RolloutSpec(rollout_id=RID, model=NEW, devices=(device, device))
    newer = RolloutDevice(device_id="b", previous=NEW)
    with pytest.raises(ValidationError, match="not older than release 3"):
        RolloutSpec(rollout_id=RID, model=NEW, devices=(newer,))
    with pytest.raises(ValidationError, match="exactly one of percent and count"):
        StageSpec(percent=10, count=2)


def test_a_stage_that_adds_no_devices_is_passed_over_at_once() -> None:
    stages = [StageSpec(percent=p, soak_s=SOAK) for p in (50, 60, 100)]
    rig = Rig(new_rollout(make_spec(3, stages=stages)))
    assert rig.state.stage_ends == (2, 2, 3)
    rig.step(RolloutCommand.START)
    result = rig.pass_stage()
    assert rig.state.stage == 2
    assert kinds(result.events) == [
        EventKind.STAGE_PASSED,
        EventKind.STAGE_PASSED,
        EventKind.STAGE_STARTED,
    ]
    assert "stage 2 adds no devices" in result.events[1].message
    assert len(assigned(result.actions)) == 1
