"""The staged rollout state machine, pure: stored state + observations + now -> state + actions.

A rollout moves one model version (a target of the TUF repository) onto an ordered list of
devices in cumulative stages (1%, 10%, 50%, 100% or counts). A stage starts by assigning its
devices; it advances once none of them is still installing and every gate of `gates` has
passed without a break for the stage's soak time. A failed gate pauses the rollout and rolls
back that stage's devices only: earlier stages passed their gates and keep the new model until
an explicit rollback, which rolls back every device the rollout moved.

`step` does no I/O and reads no clock. Its actions are data (assign, roll back, nudge) that the
driver carries out; its events are lines for the audit log. It is idempotent: stepping the
state it returned with the same inputs yields no new actions or events, so a replica that dies
mid-stage resumes from the stored state. The driver stores the new state and its actions in
one transaction and carries the actions out afterwards (an outbox): assignments are desired
states, so carrying one out twice does no harm. The order of devices is fixed when the rollout
is created (by a hash of rollout id and device id), so every replica picks the same stages.

What the driver observes for a step: the OTA statuses of the rollout's devices (with the time
the server received each), and for each device of `stage_devices(state)` its health and
reading quality in a window before its ``assigned_at`` and one since the new model took over
(its first active report), and its shadow numbers.
The engine keeps only what counts: evidence of devices whose install succeeded, in the
current stage; reports of this rollout received after the device's assignment.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import ValidationError

from fleet_protocol.messages import OtaAction, OtaState
from fleet_server.exceptions import RolloutCommandRefused, RolloutStateInvalid
from fleet_server.rollouts.gates import (
    GateStatus,
    GateVerdict,
    HealthPair,
    QualityPair,
    health_gate,
    install_gate,
    reading_quality_gate,
    shadow_gate,
)
from fleet_server.rollouts.values import (
    Action,
    AssignDevices,
    Desired,
    DeviceRecord,
    DeviceReport,
    EventKind,
    ModelTarget,
    Nudge,
    Observations,
    Outcome,
    RollBackDevices,
    RolloutCommand,
    RolloutEvent,
    RolloutSpec,
    RolloutState,
    RolloutStatus,
    StageSpec,
)

_SUCCEEDED = frozenset({OtaState.ACTIVE, OtaState.PROBATION_PASSED})
_PROBATION_PASSED = frozenset({OtaState.PROBATION_PASSED})
_FAILED = frozenset({OtaState.FAILED, OtaState.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class StepResult:
    """The new state, the actions to carry out, the events to log."""

    state: RolloutState
    actions: tuple[Action, ...] = ()
    events: tuple[RolloutEvent, ...] = ()


def stage_sizes(device_count: int, stages: Sequence[StageSpec]) -> tuple[int, ...]:
    """Devices reached in all by each stage: at least 1, never fewer than the stage before."""
    sizes: list[int] = []
    for stage in stages:
        if stage.percent is not None:
            # round() first: 10% of 30 is 3.0000000000000004 in floating point, not 4.
            wanted = math.ceil(round(device_count * stage.percent / 100, 9))
        else:
            wanted = stage.count or 0
        sizes.append(min(device_count, max(1, wanted, sizes[-1] if sizes else 0)))
    return tuple(sizes)


def rollout_order(rollout_id: str, device_ids: Iterable[str]) -> list[str]:
    """`device_ids` in the stable order of sha256(rollout id, device id)."""

    def key(device_id: str) -> bytes:
        return hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()

    return sorted(device_ids, key=key)


def new_rollout(spec: RolloutSpec) -> RolloutState:
    """A draft rollout of `spec`, its devices ordered and split into stages once and for all."""
    by_id = {d.device_id: d for d in spec.devices}
    order = list(by_id)
    if spec.spread_by_hash:
        order = rollout_order(spec.rollout_id, order)
    ends = stage_sizes(len(order), spec.stages)
    records = []
    for position, device_id in enumerate(order):
        # The first stage whose end lies beyond the position; past the last stage, none.
        stage = bisect.bisect_right(ends, position)
        records.append(
            DeviceRecord(device_id=device_id, previous=by_id[device_id].previous, stage=stage)
        )
    return RolloutState(spec=spec, stage_ends=ends, devices=tuple(records))


def dump_state(state: RolloutState) -> str:
    """`state` as JSON text, for the driver's table."""
    return state.model_dump_json()


def load_state(text: str | bytes) -> RolloutState:
    """The state `dump_state` wrote; raises RolloutStateInvalid on anything else."""
    try:
        return RolloutState.model_validate_json(text)
    except ValidationError as e:
        raise RolloutStateInvalid(f"stored rollout state does not validate: {e}") from e


def outcome(record: DeviceRecord, spec: RolloutSpec) -> Outcome:
    """How `record`'s install of the rollout's model stands (a timed-out device that reports
    success later counts as succeeded)."""
    model = spec.model
    succeeded = _PROBATION_PASSED if spec.policy.require_probation_passed else _SUCCEEDED
    if record.reported_version == model.version and record.reported in succeeded:
        return Outcome.SUCCEEDED
    if (
        record.reported_version == model.version and record.reported in _FAILED
    ) or record.timed_out:
        return Outcome.FAILED
    return Outcome.PENDING


class Wanted(NamedTuple):
    """What the director should sign for a device: a target, as a rollback or not."""

    target: ModelTarget
    rollback: bool


def desired_assignments(state: RolloutState) -> dict[str, Wanted]:
    """The assignment the rollout wants signed for each device it moved (none for the rest).

    Level-triggered repair for the driver: a driver that cannot tell whether a stored step's
    actions were carried out (it died in between) compares this with the signed assignments
    and signs the difference.
    """
    wanted: dict[str, Wanted] = {}
    for r in state.devices:
        if r.desired is Desired.NEW:
            wanted[r.device_id] = Wanted(state.spec.model, rollback=False)
        elif r.desired is Desired.PREVIOUS:
            wanted[r.device_id] = Wanted(r.previous, rollback=True)
    return wanted


def stage_devices(state: RolloutState, stage: int | None = None) -> tuple[DeviceRecord, ...]:
    """The devices `stage` (default: the current one) moves; the driver gathers their evidence."""
    index = state.stage if stage is None else stage
    return tuple(r for r in state.devices if r.stage == index)


@dataclass
class _Work:
    """A step in progress: the state being changed, and what it emits."""

    state: RolloutState
    now: datetime
    records: dict[str, DeviceRecord] = field(init=False)
    actions: list[Action] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.records = {r.device_id: r for r in self.state.devices}

    @property
    def spec(self) -> RolloutSpec:
        return self.state.spec

    def set(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def update(self, device_id: str, **changes: object) -> None:
        self.records[device_id] = self.records[device_id].model_copy(update=changes)

    def event(self, kind: EventKind, message: str, device_ids: Sequence[str] = ()) -> None:
        self.events.append(
            RolloutEvent(
                at=self.now,
                rollout_id=self.spec.rollout_id,
                kind=kind,
                stage=self.state.stage,
                message=message,
                device_ids=tuple(device_ids),
            )
        )

    def current(self) -> list[DeviceRecord]:
        return [r for r in self.records.values() if r.stage == self.state.stage]

    def result(self) -> StepResult:
        state = self.state.model_copy(update={"devices": tuple(self.records.values())})
        return StepResult(state=state, actions=tuple(self.actions), events=tuple(self.events))

    # --- device changes -------------------------------------------------------------------

    def assign(self, device_ids: Sequence[str]) -> None:
        """Assign the new model to `device_ids` afresh: their after-window starts now."""
        if not device_ids:
            return
        deadline = self.now + timedelta(seconds=self.spec.policy.install_timeout_s)
        for device_id in device_ids:
            self.update(
                device_id,
                desired=Desired.NEW,
                assigned_at=self.now,
                install_deadline=deadline,
                last_nudged_at=self.now,
                reported=None,
                reported_version=None,
                reported_at=None,
                timed_out=False,
            )
        ids = tuple(device_ids)
        model, rid = self.spec.model, self.spec.rollout_id
        self.actions.append(AssignDevices(rollout_id=rid, target=model, device_ids=ids))
        self.actions.append(
            Nudge(rollout_id=rid, action=OtaAction.INSTALL, target=model, device_ids=ids)
        )

    def roll_back(self, device_ids: Sequence[str]) -> None:
        """Roll `device_ids` back to what each ran before, one action per previous model."""
        groups: dict[ModelTarget, list[str]] = {}
        for device_id in device_ids:
            record = self.records[device_id]
            groups.setdefault(record.previous, []).append(device_id)
            self.update(device_id, desired=Desired.PREVIOUS, last_nudged_at=self.now)
        rid = self.spec.rollout_id
        for target, ids in sorted(groups.items(), key=lambda g: (g[0].release, g[0].target_path)):
            self.actions.append(RollBackDevices(rollout_id=rid, to=target, device_ids=tuple(ids)))
            self.actions.append(
                Nudge(
                    rollout_id=rid, action=OtaAction.ROLLBACK, target=target, device_ids=tuple(ids)
                )
            )

    def absorb(self, reports: Iterable[DeviceReport]) -> None:
        """Record each device's newest report about this rollout since its assignment.

        A report must come after the assignment: one received at the very instant of a fresh
        assignment (a stage rolled back and resumed within one step) answers the old one.
        """
        for report in sorted(reports, key=lambda r: r.at):
            record = self.records.get(report.device_id)
            if (
                record is None
                or report.rollout_id != self.spec.rollout_id
                or record.desired is Desired.UNTOUCHED
                or (record.assigned_at is not None and report.at <= record.assigned_at)
                or (record.reported_at is not None and report.at < record.reported_at)
            ):
                continue
            self.update(
                report.device_id,
                reported=report.state,
                reported_version=report.model_version,
                reported_at=report.at,
            )

    # --- the stage ------------------------------------------------------------------------

    def start_stage(self) -> None:
        ids = [r.device_id for r in self.current() if r.desired is Desired.UNTOUCHED]
        self.set(stage_started_at=self.now, passing_since=None, verdicts=())
        self.event(
            EventKind.STAGE_STARTED, f"stage {self.state.stage + 1}: {len(ids)} devices", ids
        )
        self.assign(ids)

    def advance(self) -> None:
        self.set(stage=self.state.stage + 1, stage_started_at=None, passing_since=None)
        if self.state.stage >= len(self.state.stage_ends):
            self.set(stage=len(self.state.stage_ends) - 1, status=RolloutStatus.COMPLETED)
            self.event(EventKind.COMPLETED, "every stage passed")

    def time_out(self, moving: Sequence[DeviceRecord]) -> None:
        late = [
            r.device_id
            for r in moving
            if outcome(r, self.spec) is Outcome.PENDING
            and r.install_deadline is not None
            and r.install_deadline <= self.now
        ]
        for device_id in late:
            self.update(device_id, timed_out=True)
        if late:
            self.event(EventKind.DEVICES_TIMED_OUT, f"{len(late)} installs timed out", late)

    def renudge(self, moving: Sequence[DeviceRecord]) -> None:
        every = timedelta(seconds=self.spec.policy.renudge_interval_s)
        due = [
            r.device_id
            for r in moving
            if outcome(r, self.spec) is Outcome.PENDING
            and (r.last_nudged_at is None or r.last_nudged_at + every <= self.now)
        ]
        for device_id in due:
            self.update(device_id, last_nudged_at=self.now)
        if due:
            self.actions.append(
                Nudge(
                    rollout_id=self.spec.rollout_id,
                    action=OtaAction.INSTALL,
                    target=self.spec.model,
                    device_ids=tuple(due),
                )
            )

    def judge(self, moving: Sequence[DeviceRecord], seen: Observations) -> list[GateVerdict]:
        """The gates over the stage's devices; health and quality over those not failed."""
        policy = self.spec.policy
        results = {r.device_id: outcome(r, self.spec) for r in moving}
        counted = [d for d, o in results.items() if o is not Outcome.FAILED]
        succeeded = {d for d, o in results.items() if o is Outcome.SUCCEEDED}
        # A pending device counts with no data, so a stage waits for enough devices to install.
        health = {p.device_id: p for p in seen.health if p.device_id in succeeded}
        quality = {p.device_id: p for p in seen.quality if p.device_id in succeeded}
        return [
            install_gate(
                attempted=len(moving),
                succeeded=len(succeeded),
                failed=len(results) - len(counted),
                policy=policy,
            ),
            health_gate((health.get(d, HealthPair(device_id=d)) for d in counted), policy),
            reading_quality_gate(
                (quality.get(d, QualityPair(device_id=d)) for d in counted), policy
            ),
            shadow_gate((s for s in seen.shadow if s.device_id in succeeded), policy),
        ]

    def run_stage(self, seen: Observations) -> bool:
        """Move the current stage on; True when it advanced (the next one may move too)."""
        moving = self.current()
        if not moving:  # a stage that adds no devices (50% then 60% of 3) has nothing to judge
            self.event(EventKind.STAGE_PASSED, f"stage {self.state.stage + 1} adds no devices")
            self.advance()
            return True
        if self.state.stage_started_at is None:
            self.start_stage()
            moving = self.current()
        self.time_out(moving)
        moving = self.current()
        verdicts = self.judge(moving, seen)
        self.set(verdicts=tuple(verdicts))
        failed = [v for v in verdicts if v.status is GateStatus.FAIL]
        if failed:
            self.fail_stage(failed)
            return False
        self.renudge(moving)
        pending = [r for r in moving if outcome(r, self.spec) is Outcome.PENDING]
        blocking = [v for v in verdicts if not v.passing]
        if pending or blocking:
            if self.state.passing_since is not None:
                why = blocking[0].reason if blocking else f"{len(pending)} installs pending"
                self.event(EventKind.SOAK_RESET, f"soak restarts: {why}")
                self.set(passing_since=None)
            return False
        since = self.state.passing_since
        if since is None:
            since = self.now
            self.set(passing_since=since)
            self.event(EventKind.SOAK_STARTED, "every gate passes; soak starts")
        soak = self.spec.stages[self.state.stage].soak_s
        if self.now - since >= timedelta(seconds=soak):
            self.event(EventKind.STAGE_PASSED, f"stage {self.state.stage + 1} passed its soak")
            self.advance()
            return True
        return False

    def fail_stage(self, failed: Sequence[GateVerdict]) -> None:
        reason = "; ".join(v.reason for v in failed)
        self.event(EventKind.GATE_FAILED, reason)
        ids = [r.device_id for r in self.current() if r.desired is Desired.NEW]
        self.roll_back(ids)
        self.event(EventKind.STAGE_ROLLED_BACK, f"{len(ids)} devices of the stage", ids)
        self.set(status=RolloutStatus.PAUSED, pause_reason=reason, passing_since=None)
        self.event(EventKind.PAUSED, reason)

    # --- commands -------------------------------------------------------------------------

    def command(self, command: RolloutCommand) -> None:
        status = self.state.status
        target = _COMMAND_TARGET[command]
        if status is target:
            return  # asked again: already done
        if status not in _COMMAND_FROM[command]:
            raise RolloutCommandRefused(
                f"rollout {self.spec.rollout_id!r} is {status}: it cannot {command}"
            )
        if command is RolloutCommand.START:
            self.set(status=RolloutStatus.RUNNING)
            self.event(EventKind.STARTED, f"rollout of {self.spec.model.version} starts")
        elif command is RolloutCommand.PAUSE:
            self.set(
                status=RolloutStatus.PAUSED,
                pause_reason="paused by an operator",
                passing_since=None,
            )
            self.event(EventKind.PAUSED, "paused by an operator")
        elif command is RolloutCommand.RESUME:
            self.resume()
        elif command is RolloutCommand.ABORT:
            self.set(status=RolloutStatus.ABORTED, passing_since=None)
            self.event(EventKind.ABORTED, "aborted: devices keep what they were assigned")
        else:
            ids = [r.device_id for r in self.records.values() if r.desired is Desired.NEW]
            self.roll_back(ids)
            self.set(status=RolloutStatus.ROLLED_BACK, passing_since=None)
            self.event(EventKind.ROLLED_BACK, f"{len(ids)} devices roll back", ids)

    def resume(self) -> None:
        """Run again: a stage rolled back by a failed gate is assigned afresh, and unfinished
        installs get a full timeout again (the rollout did not wait for them while paused)."""
        self.set(status=RolloutStatus.RUNNING, pause_reason="", passing_since=None)
        self.event(EventKind.RESUMED, "resumed")
        current = self.current()  # started: a rollout pauses only while a stage runs
        self.assign([r.device_id for r in current if r.desired is Desired.PREVIOUS])
        deadline = self.now + timedelta(seconds=self.spec.policy.install_timeout_s)
        for r in current:
            if r.desired is Desired.NEW and outcome(r, self.spec) is Outcome.PENDING:
                self.update(
                    r.device_id, install_deadline=max(deadline, r.install_deadline or deadline)
                )


def allowed_commands(status: RolloutStatus) -> list[RolloutCommand]:
    """The operator commands a rollout of `status` accepts (what the dashboard offers)."""
    return [c for c in RolloutCommand if status in _COMMAND_FROM[c]]


_COMMAND_TARGET = {
    RolloutCommand.START: RolloutStatus.RUNNING,
    RolloutCommand.PAUSE: RolloutStatus.PAUSED,
    RolloutCommand.RESUME: RolloutStatus.RUNNING,
    RolloutCommand.ABORT: RolloutStatus.ABORTED,
    RolloutCommand.ROLLBACK: RolloutStatus.ROLLED_BACK,
}
_COMMAND_FROM = {
    RolloutCommand.START: {RolloutStatus.DRAFT},
    RolloutCommand.PAUSE: {RolloutStatus.RUNNING},
    RolloutCommand.RESUME: {RolloutStatus.PAUSED},
    RolloutCommand.ABORT: {RolloutStatus.DRAFT, RolloutStatus.RUNNING, RolloutStatus.PAUSED},
    RolloutCommand.ROLLBACK: {
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
        RolloutStatus.COMPLETED,
        RolloutStatus.ABORTED,
    },
}


def step(
    state: RolloutState,
    observations: Observations,
    now: datetime,
    command: RolloutCommand | None = None,
) -> StepResult:
    """Apply `command` (if any) and the observations at `now`; move the rollout as far as it may.

    Raises RolloutCommandRefused for a command its status does not allow (resuming a completed
    rollout); a command already in effect (pausing a paused one) changes nothing.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    work = _Work(state, now)
    work.absorb(observations.reports)
    if command is not None:
        work.command(command)
    while work.state.status is RolloutStatus.RUNNING and work.run_stage(observations):
        pass
    return work.result()
