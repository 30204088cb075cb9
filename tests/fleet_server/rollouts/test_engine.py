"""The rollout state machine: stages, soak, failed gates, commands, timeouts, idempotence."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet_protocol.messages import OtaAction, OtaState
from fleet_server.exceptions import RolloutCommandRefused, RolloutStateInvalid
from fleet_server.rollouts.engine import (
    StepResult,
    Wanted,
    desired_assignments,
    dump_state,
    load_state,
    new_rollout,
    rollout_order,
    stage_devices,
    stage_sizes,
    step,
)
from fleet_server.rollouts.gates import (
    GateKind,
    GatePolicy,
    GateStatus,
    HealthPair,
    HealthWindow,
    QualityPair,
    QualityWindow,
)
from fleet_server.rollouts.values import (
    AssignDevices,
    Desired,
    DeviceReport,
    EventKind,
    ModelTarget,
    Nudge,
    Observations,
    RollBackDevices,
    RolloutCommand,
    RolloutDevice,
    RolloutEvent,
    RolloutSpec,
    RolloutState,
    RolloutStatus,
    StageSpec,
)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
RID = "r-2026-12"
NEW = ModelTarget(
    target_path="models/roadsign/2026.12.0/bundle.tar", version="2026.12.0", release=3
)
OLD = ModelTarget(
    target_path="models/roadsign/2026.11.0/bundle.tar", version="2026.11.0", release=2
)
OLDER = ModelTarget(
    target_path="models/roadsign/2026.10.0/bundle.tar", version="2026.10.0", release=1
)
SOAK = 3600.0


def make_spec(
    n: int = 20,
    *,
    stages: Sequence[StageSpec] | None = None,
    policy: GatePolicy | None = None,
    rollout_id: str = RID,
) -> RolloutSpec:
    devices = [
        RolloutDevice(device_id=f"dev-{i:03d}", previous=OLD if i % 2 else OLDER) for i in range(n)
    ]
    return RolloutSpec(
        rollout_id=rollout_id,
        model=NEW,
        devices=tuple(devices),
        stages=tuple(stages or [StageSpec(percent=p, soak_s=SOAK) for p in (1, 10, 50, 100)]),
        policy=policy or GatePolicy(),
    )


def reports(
    ids: Iterable[str], at: datetime, state: OtaState = OtaState.ACTIVE
) -> list[DeviceReport]:
    return [
        DeviceReport(device_id=d, state=state, model_version=NEW.version, rollout_id=RID, at=at)
        for d in ids
    ]


def health(ids: Iterable[str], *, fps_after: float = 20.0) -> list[HealthPair]:
    return [
        HealthPair(
            device_id=d,
            before=HealthWindow(hours=4, fps=20, latency_p95_ms=40),
            after=HealthWindow(hours=1, fps=fps_after, latency_p95_ms=40),
        )
        for d in ids
    ]


def quality(ids: Iterable[str]) -> list[QualityPair]:
    window = QualityWindow(driving_hours=1, readings=50, mean_confidence=0.9, disagreements=1)
    return [QualityPair(device_id=d, before=window, after=window) for d in ids]


@dataclass
class Rig:
    """A rollout stepped through time, remembering every action and event."""

    state: RolloutState
    now: datetime = T0
    actions: list[AssignDevices | RollBackDevices | Nudge] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    """Devices that report the new model active (and healthy) from now on."""
    reported: list[DeviceReport] = field(default_factory=list)

    def step(
        self, command: RolloutCommand | None = None, *, after_s: float = 0, fps_after: float = 20.0
    ) -> StepResult:
        self.now += timedelta(seconds=after_s)
        seen = Observations(
            reports=tuple(self.reported),
            health=tuple(health(sorted(self.active), fps_after=fps_after)),
            quality=tuple(quality(sorted(self.active))),
        )
        result = step(self.state, seen, self.now, command)
        # The same inputs once more: the state it returned must yield nothing new.
        again = step(result.state, seen, self.now, None)
        assert again.actions == ()
        assert again.events == ()
        assert again.state == result.state
        self.state = result.state
        self.actions += result.actions
        self.events += result.events
        return result

    def status(self) -> RolloutStatus:
        return self.state.status

    def install(self, ids: Iterable[str], state: OtaState = OtaState.ACTIVE) -> None:
        ids = list(ids)
        self.now += timedelta(seconds=1)  # a device answers after it was assigned
        self.reported += reports(ids, self.now, state)
        if state is OtaState.ACTIVE:
            self.active |= set(ids)

    def stage_ids(self) -> list[str]:
        return [r.device_id for r in stage_devices(self.state)]

    def pass_stage(self) -> StepResult:
        """The current stage's devices install and stay healthy for the soak; step through it."""
        self.install(self.stage_ids())
        self.step(after_s=60)
        return self.step(after_s=SOAK)


def assigned(actions: Iterable[object]) -> list[str]:
    return [d for a in actions if isinstance(a, AssignDevices) for d in a.device_ids]


def rolled_back(actions: Iterable[object]) -> list[str]:
    return [d for a in actions if isinstance(a, RollBackDevices) for d in a.device_ids]


def moves(actions: Iterable[object]) -> list[object]:
    """The actions that change what a device should run (not nudges)."""
    return [a for a in actions if not isinstance(a, Nudge)]


def kinds(events: Iterable[RolloutEvent]) -> list[EventKind]:
    return [e.kind for e in events]


# --- stage sizing and order ---------------------------------------------------------------


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


# --- running through stages ---------------------------------------------------------------


def test_start_assigns_and_nudges_the_first_stage_only() -> None:
    rig = Rig(new_rollout(make_spec()))
    result = rig.step(RolloutCommand.START)
    assert rig.status() is RolloutStatus.RUNNING
    first = rig.stage_ids()
    assert len(first) == 1
    assert assigned(result.actions) == first
    nudges = [a for a in result.actions if isinstance(a, Nudge)]
    assert [(n.action, n.target, list(n.device_ids)) for n in nudges] == [
        (OtaAction.INSTALL, NEW, first)
    ]
    assert kinds(result.events) == [EventKind.STARTED, EventKind.STAGE_STARTED]


def test_a_stage_advances_only_after_its_devices_are_active_and_gates_held_for_the_soak() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    first = rig.stage_ids()
    waiting = rig.step(after_s=SOAK * 2)  # nobody reported: no soak, no advance
    assert moves(waiting.actions) == []
    assert waiting.events == ()
    rig.install(first)
    started = rig.step(after_s=60)
    assert kinds(started.events) == [EventKind.SOAK_STARTED]
    assert rig.step(after_s=SOAK - 1).actions == ()
    advanced = rig.step(after_s=1)
    assert kinds(advanced.events) == [EventKind.STAGE_PASSED, EventKind.STAGE_STARTED]
    assert rig.state.stage == 1
    assert assigned(advanced.actions) == rig.stage_ids()
    assert set(rig.stage_ids()).isdisjoint(first)


def test_a_rollout_completes_having_assigned_every_device_exactly_once() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    for _ in range(4):
        rig.pass_stage()
    assert rig.status() is RolloutStatus.COMPLETED
    assert kinds(rig.events)[-1] is EventKind.COMPLETED
    ids = assigned(rig.actions)
    assert sorted(ids) == sorted(d.device_id for d in rig.state.spec.devices)
    assert rolled_back(rig.actions) == []


def test_a_blip_in_a_gate_restarts_the_soak() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.install(rig.stage_ids())
    rig.step(after_s=60)
    assert rig.state.passing_since == rig.now
    device = rig.stage_ids()[0]
    rig.active.discard(device)  # its health stops arriving: the health gate waits
    blip = rig.step(after_s=SOAK - 60)
    assert kinds(blip.events) == [EventKind.SOAK_RESET]
    assert "health" in blip.events[0].message
    rig.active.add(device)
    restarted = rig.step(after_s=60)
    assert kinds(restarted.events) == [EventKind.SOAK_STARTED]
    assert rig.step(after_s=SOAK - 1).actions == ()  # the soak counts from the restart
    assert rig.step(after_s=1).actions != ()
    assert rig.state.stage == 1


def test_a_failed_gate_pauses_and_rolls_back_that_stages_devices_only() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.pass_stage()
    assert rig.state.stage == 2
    earlier = [r.device_id for i in (0, 1) for r in stage_devices(rig.state, i)]
    stage = rig.stage_ids()
    rig.install(stage)
    failing = rig.step(after_s=60, fps_after=12)
    assert rig.status() is RolloutStatus.PAUSED
    assert "fps_drop_ratio 0.4 > threshold 0.1" in rig.state.pause_reason
    assert sorted(rolled_back(failing.actions)) == sorted(stage)
    # Grouped by the model each device ran before.
    targets = {a.to for a in failing.actions if isinstance(a, RollBackDevices)}
    assert targets == {OLD, OLDER}
    previous = {r.device_id: r.previous for r in rig.state.devices}
    for action in failing.actions:
        if isinstance(action, RollBackDevices):
            assert all(previous[d] == action.to for d in action.device_ids)
    assert kinds(failing.events) == [
        EventKind.GATE_FAILED,
        EventKind.STAGE_ROLLED_BACK,
        EventKind.PAUSED,
    ]
    desired = {r.device_id: r.desired for r in rig.state.devices}
    assert len(earlier) == 2
    assert all(desired[d] is Desired.NEW for d in earlier)
    assert all(desired[d] is Desired.PREVIOUS for d in stage)
    # What the director should sign: the stage back to each device's previous model, as a
    # rollback; the earlier stages keep the new model.
    wanted = desired_assignments(rig.state)
    assert {d: wanted[d] for d in earlier} == {d: Wanted(NEW, rollback=False) for d in earlier}
    assert all(wanted[d] == Wanted(previous[d], rollback=True) for d in stage)
    assert len(wanted) == len(earlier) + len(stage)
    # Paused: time passing moves nothing.
    assert rig.step(after_s=SOAK * 10).actions == ()


def test_resume_after_a_failed_gate_assigns_the_stage_afresh_and_ignores_its_old_reports() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    stage = rig.stage_ids()
    rig.install(stage)
    rig.step(after_s=60, fps_after=10)
    assert rig.status() is RolloutStatus.PAUSED
    resumed = rig.step(RolloutCommand.RESUME, after_s=600)
    assert rig.status() is RolloutStatus.RUNNING
    assert assigned(resumed.actions) == stage
    # The reports of the first attempt predate the new assignment: nothing is active yet.
    assert all(r.reported is None for r in stage_devices(rig.state))
    assert moves(rig.step(after_s=SOAK * 2).actions) == []
    assert rig.state.stage == 1
    rig.pass_stage()
    assert rig.state.stage == 2


def test_pause_holds_a_passing_stage_and_resume_continues_it() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.install(rig.stage_ids())
    rig.step(after_s=60)
    paused = rig.step(RolloutCommand.PAUSE)
    assert rig.status() is RolloutStatus.PAUSED
    assert kinds(paused.events) == [EventKind.PAUSED]
    assert rig.step(RolloutCommand.PAUSE).events == ()  # asked twice: once
    assert rig.step(after_s=SOAK * 2).actions == ()
    assert rig.state.stage == 0
    resumed = rig.step(RolloutCommand.RESUME)
    assert assigned(resumed.actions) == []  # its devices kept their assignment
    assert kinds(resumed.events) == [EventKind.RESUMED, EventKind.SOAK_STARTED]
    assert rig.step(after_s=SOAK).actions != ()
    assert rig.state.stage == 1


def test_abort_stops_for_good_and_keeps_what_was_assigned() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    first = rig.stage_ids()
    aborted = rig.step(RolloutCommand.ABORT)
    assert rig.status() is RolloutStatus.ABORTED
    assert aborted.actions == ()
    rig.install(first)
    assert rig.step(after_s=SOAK * 3).actions == ()
    with pytest.raises(RolloutCommandRefused, match="is aborted: it cannot resume"):
        rig.step(RolloutCommand.RESUME)
    assert {r.desired for r in stage_devices(rig.state)} == {Desired.NEW}


def test_an_explicit_rollback_rolls_back_every_device_the_rollout_moved() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.pass_stage()
    moved = assigned(rig.actions)
    assert len(moved) == 10  # stages 1 and 2 done, stage 3 (to 50%) assigned
    result = rig.step(RolloutCommand.ROLLBACK)
    assert rig.status() is RolloutStatus.ROLLED_BACK
    assert sorted(rolled_back(result.actions)) == sorted(moved)
    nudges = [a for a in result.actions if isinstance(a, Nudge)]
    assert {n.action for n in nudges} == {OtaAction.ROLLBACK}
    assert sorted(d for n in nudges for d in n.device_ids) == sorted(moved)
    assert rig.step(RolloutCommand.ROLLBACK).actions == ()  # already rolled back
    untouched = [r for r in rig.state.devices if r.device_id not in moved]
    assert {r.desired for r in untouched} == {Desired.UNTOUCHED}


def test_a_completed_rollout_can_still_be_rolled_back() -> None:
    rig = Rig(new_rollout(make_spec(4, stages=[StageSpec(percent=100, soak_s=0)])))
    rig.step(RolloutCommand.START)
    rig.install(rig.stage_ids())
    rig.step(after_s=60)
    assert rig.status() is RolloutStatus.COMPLETED
    assert len(rolled_back(rig.step(RolloutCommand.ROLLBACK).actions)) == 4


def test_commands_a_status_does_not_allow_are_refused() -> None:
    rig = Rig(new_rollout(make_spec()))
    for command in (RolloutCommand.RESUME, RolloutCommand.PAUSE, RolloutCommand.ROLLBACK):
        with pytest.raises(RolloutCommandRefused, match="is draft"):
            rig.step(command)
    rig.step(RolloutCommand.START)
    assert rig.step(RolloutCommand.START).events == ()  # already running
    rig.step(RolloutCommand.PAUSE)
    with pytest.raises(RolloutCommandRefused, match="is paused: it cannot start"):
        rig.step(RolloutCommand.START)  # resume is the word: start would hide a failed stage


# --- devices that stay silent, or fail ----------------------------------------------------


def test_a_silent_device_keeps_the_stage_waiting_is_renudged_and_times_out_as_failed() -> None:
    policy = GatePolicy(install_timeout_s=4 * 3600, renudge_interval_s=1800)
    rig = Rig(new_rollout(make_spec(policy=policy)))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.pass_stage()
    stage = rig.stage_ids()
    assert len(stage) == 8
    silent, rest = stage[0], stage[1:]
    rig.install(rest)
    rig.step(after_s=60)
    waiting = rig.step(after_s=SOAK * 2)
    assert rig.status() is RolloutStatus.RUNNING
    assert rig.state.stage == 2  # waits for the silent device, does not count it failed
    renudges = [a for a in waiting.actions if isinstance(a, Nudge)]
    assert [list(n.device_ids) for n in renudges] == [[silent]]
    timed_out = rig.step(after_s=2 * 3600)
    assert EventKind.DEVICES_TIMED_OUT in kinds(timed_out.events)
    # 1 of 8 failed is over 5%: the stage fails and rolls back.
    assert rig.status() is RolloutStatus.PAUSED
    assert "1 of 8 devices failed" in rig.state.pause_reason
    assert sorted(rolled_back(timed_out.actions)) == sorted(stage)


def test_a_timed_out_device_within_the_allowed_failure_rate_does_not_hold_the_stage() -> None:
    policy = GatePolicy(install_timeout_s=3600, max_install_failure_rate=0.2)
    rig = Rig(new_rollout(make_spec(policy=policy)))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.pass_stage()
    stage = rig.stage_ids()
    rig.install(stage[1:])
    rig.step(after_s=60)
    rig.step(after_s=3600)  # the deadline passes: one failure of 8 is within 20%
    assert rig.state.passing_since == rig.now
    rig.step(after_s=SOAK)
    assert rig.state.stage == 3


def test_a_device_that_rolls_itself_back_counts_as_a_failed_install() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.install(rig.stage_ids(), OtaState.ROLLED_BACK)
    result = rig.step(after_s=60)
    assert rig.status() is RolloutStatus.PAUSED
    assert "install_failure_rate 1 > threshold 0.05" in rig.state.pause_reason
    assert rolled_back(result.actions) == rig.stage_ids()


def test_reports_of_other_rollouts_versions_or_devices_are_ignored() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    device = rig.stage_ids()[0]
    rig.reported += [
        DeviceReport(
            device_id=device,
            state=OtaState.ACTIVE,
            model_version=NEW.version,
            rollout_id="other",
            at=rig.now,
        ),
        DeviceReport(
            device_id=device,
            state=OtaState.ACTIVE,
            model_version=OLD.version,
            rollout_id=RID,
            at=rig.now,
        ),
        DeviceReport(
            device_id="stranger",
            state=OtaState.FAILED,
            model_version=NEW.version,
            rollout_id=RID,
            at=rig.now,
        ),
        DeviceReport(
            device_id=device,
            state=OtaState.ACTIVE,
            model_version=NEW.version,
            rollout_id=RID,
            at=rig.now - timedelta(seconds=1),
        ),  # before assignment
    ]
    rig.step(after_s=SOAK * 2)
    assert rig.state.passing_since is None
    assert rig.state.stage == 0
    assert rig.status() is RolloutStatus.RUNNING


# --- storage ------------------------------------------------------------------------------


def test_state_round_trips_through_json_and_a_restarted_replica_emits_nothing_again() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.install(rig.stage_ids()[:1])
    rig.step(after_s=60)
    stored = dump_state(rig.state)
    restored = load_state(stored)
    assert restored == rig.state
    seen = Observations(reports=tuple(rig.reported), health=tuple(health(rig.active)))
    assert step(restored, seen, rig.now).actions == ()


def test_a_damaged_stored_state_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RolloutStateInvalid, match="does not validate"):
        load_state('{"status": "running"}')
    state = new_rollout(make_spec())
    truncated = state.model_copy(update={"devices": state.devices[:-1]})
    with pytest.raises(RolloutStateInvalid, match="not the spec's devices"):
        load_state(dump_state(truncated))
    with pytest.raises(RolloutStateInvalid, match="do not fit 4 stages"):
        load_state(dump_state(state.model_copy(update={"stage_ends": (1, 20)})))
    with pytest.raises(RolloutStateInvalid, match="does not validate"):
        load_state(b"\xff not json")
    with pytest.raises(ValueError, match="timezone-aware"):
        step(new_rollout(make_spec()), Observations(), datetime(2026, 12, 1))


# --- any sequence of inputs ---------------------------------------------------------------

# Each step: what happens ("wait" seconds, a device "report"s a state, health turns to an
# "fps", an operator "command"s), with every argument drawn and the unused ones ignored;
# waits and reports are drawn more often than commands, so that rollouts get past stage 1.
_OPS = st.tuples(
    st.sampled_from(["wait", "wait", "report", "report", "report", "fps", "command"]),
    st.sampled_from([0.0, 60.0, SOAK, SOAK, SOAK, 6 * 3600.0]),
    st.integers(0, 5),
    st.sampled_from([OtaState.ACTIVE] * 16 + list(OtaState)),
    st.sampled_from([20.0] * 4 + [12.0]),
    st.sampled_from([RolloutCommand.RESUME] * 4 + list(RolloutCommand)),
)


@given(ops=st.lists(_OPS, min_size=10, max_size=60))
def test_any_sequence_of_inputs_keeps_the_rollouts_promises(
    ops: list[tuple[str, float, int, OtaState, float, RolloutCommand]],
) -> None:
    stages = [StageSpec(count=c, soak_s=SOAK) for c in (1, 3, 6)]
    rig = Rig(new_rollout(make_spec(6, stages=stages)))
    rig.step(RolloutCommand.START)
    fps = 20.0
    ever_assigned: set[str] = set(assigned(rig.actions))
    for op, seconds, index, state, new_fps, operator_command in ops:
        command = None
        if op == "wait":
            rig.now += timedelta(seconds=seconds)
        elif op == "report":
            current = stage_devices(rig.state)  # mostly of the stage: rollouts get somewhere
            device = (
                current[index] if index < len(current) else rig.state.devices[index]
            ).device_id
            rig.install([device], state)
        elif op == "fps":
            fps = new_fps
        else:
            command = operator_command
        stage_before, status_before = rig.state.stage, rig.state.status
        try:
            result = rig.step(command, fps_after=fps)  # also proves stepping again adds nothing
        except RolloutCommandRefused:
            continue
        assert load_state(dump_state(result.state)) == result.state
        ever_assigned |= set(assigned(result.actions))
        # Only devices the rollout moved are ever rolled back; a failed gate rolls back the
        # stage it judged, nothing earlier.
        assert set(rolled_back(result.actions)) <= ever_assigned
        if command is not RolloutCommand.ROLLBACK and rolled_back(result.actions):
            # (a resumed stage can fail at once: a device reported failed while it was paused)
            assert status_before is RolloutStatus.RUNNING or command is RolloutCommand.RESUME
            stage_ids = {r.device_id for r in stage_devices(result.state, stage_before)}
            assert set(rolled_back(result.actions)) <= stage_ids
        # No device is reached before its stage; the stage never goes back.
        assert result.state.stage >= stage_before
        for record in result.state.devices:
            if record.desired is not Desired.UNTOUCHED:
                assert record.stage <= result.state.stage
        if rolled_back(result.actions):
            event(f"rolled back by {command or 'a failed gate'}")
        if result.state.status in (RolloutStatus.PAUSED, RolloutStatus.ABORTED):
            assert assigned(result.actions) == [] or command is RolloutCommand.RESUME
    event(f"ended {rig.state.status} in stage {rig.state.stage + 1}")


def test_a_policy_can_ask_for_probation_passed_before_an_install_counts() -> None:
    policy = GatePolicy(require_probation_passed=True)
    rig = Rig(new_rollout(make_spec(policy=policy)))
    rig.step(RolloutCommand.START)
    rig.install(rig.stage_ids())
    assert moves(rig.step(after_s=SOAK * 2).actions) == []
    assert rig.state.stage == 0  # active is not enough
    rig.install(rig.stage_ids(), OtaState.PROBATION_PASSED)
    rig.step(after_s=60)
    assert rig.state.passing_since == rig.now


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


def test_only_the_current_stages_installed_devices_are_judged() -> None:
    rig = Rig(new_rollout(make_spec()))
    rig.step(RolloutCommand.START)
    rig.pass_stage()
    rig.pass_stage()
    stage = rig.stage_ids()
    earlier = [r.device_id for i in (0, 1) for r in stage_devices(rig.state, i)]
    rig.install(stage[:-1])
    rig.install(stage[-1:], OtaState.DOWNLOADING)
    rig.now += timedelta(seconds=60)
    # The earlier stages' devices slow down, and so does the one still downloading (it runs
    # the old model): neither is this stage's evidence of the new model.
    slow = [*earlier, stage[-1]]
    seen = Observations(
        reports=tuple(rig.reported),
        health=tuple(health(stage[:-1]) + health(slow, fps_after=5)),
        quality=tuple(quality(stage)),
    )
    result = step(rig.state, seen, rig.now)
    assert result.state.status is RolloutStatus.RUNNING
    assert rolled_back(result.actions) == []
    health_verdict = next(v for v in result.state.verdicts if v.gate is GateKind.HEALTH)
    assert health_verdict.status is GateStatus.PASS
    assert {c.devices for c in health_verdict.checks} == {7}


def test_a_pause_does_not_eat_the_install_timeout_of_devices_still_installing() -> None:
    policy = GatePolicy(install_timeout_s=3600)
    rig = Rig(new_rollout(make_spec(policy=policy)))
    rig.step(RolloutCommand.START)
    rig.step(RolloutCommand.PAUSE, after_s=600)
    rig.step(after_s=7200)  # the deadline passes while paused: nothing is judged
    resumed = rig.step(RolloutCommand.RESUME)
    assert EventKind.DEVICES_TIMED_OUT not in kinds(resumed.events)
    assert rig.step(after_s=3599).events == ()
    timed_out = rig.step(after_s=1)  # a full timeout after the resume
    assert EventKind.DEVICES_TIMED_OUT in kinds(timed_out.events)
    assert rig.status() is RolloutStatus.PAUSED
