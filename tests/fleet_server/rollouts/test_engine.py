"""The rollout state machine: stages, soak, failed gates, commands, timeouts, idempotence,
storage."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fleet_protocol.messages import OtaAction, OtaState
from fleet_server.exceptions import RolloutCommandRefused, RolloutStateInvalid
from fleet_server.rollouts.engine import (
    Wanted,
    desired_assignments,
    dump_state,
    load_state,
    new_rollout,
    stage_devices,
    step,
)
from fleet_server.rollouts.gates import (
    GateKind,
    GatePolicy,
    GateStatus,
)
from fleet_server.rollouts.values import (
    Desired,
    DeviceReport,
    EventKind,
    Nudge,
    Observations,
    RollBackDevices,
    RolloutCommand,
    RolloutStatus,
    StageSpec,
)
from tests.fleet_server.rollouts.rollout_rig import (
    NEW,
    OLD,
    OLDER,
    RID,
    SOAK,
    Rig,
    assigned,
    health,
    kinds,
    make_spec,
    moves,
    quality,
    rolled_back,
)


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
