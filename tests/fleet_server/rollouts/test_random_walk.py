"""A random walk through a rollout's life (waits, reports, health, operator commands): every
step is idempotent, round-trips through JSON, and rolls back only what the rollout moved."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import event, given
from hypothesis import strategies as st

from fleet_protocol.messages import OtaState
from fleet_server.exceptions import RolloutCommandRefused
from fleet_server.rollouts.engine import (
    dump_state,
    load_state,
    new_rollout,
    stage_devices,
)
from fleet_server.rollouts.values import (
    Desired,
    RolloutCommand,
    RolloutStatus,
    StageSpec,
)
from tests.fleet_server.rollouts.rollout_rig import (
    SOAK,
    Rig,
    assigned,
    make_spec,
    rolled_back,
)

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
