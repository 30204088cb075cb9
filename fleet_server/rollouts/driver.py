"""The rollout driver: steps stored rollouts with what the database observed, and carries out
the actions (an outbox).

One tick (`drive_once`) has two phases:

1. **Step**, in one transaction that holds the driver's advisory lock (exactly one replica
   steps at a time; a killed replica's lock goes with its connection): for each running or
   paused rollout, lock its row, read its observations, `engine.step`, and store the new
   state, its audit events and its actions (the outbox) together.
2. **Carry out** the outbox: each action in its own transaction, under its rollout's row lock,
   marked done in that transaction. An assignment is signed and marked done atomically; a
   nudge is published, then marked done (a crash in between repeats a nudge, which is
   harmless). Actions are desired states, so a replica killed between phase 1's commit and
   phase 2 leaves them to whichever driver ticks next.

Operators' commands (pause, resume, abort, rollback) go through `step_rollout` too, under the
same row lock, so they never race a tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_protocol.messages import OtaAction
from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.exceptions import FleetError, RolloutError, RolloutNotFound
from fleet_server.models import Rollout, RolloutAction, RolloutEventRow, utcnow
from fleet_server.repository import service
from fleet_server.rollouts import engine as rollout_engine
from fleet_server.rollouts import evidence
from fleet_server.rollouts.gates import (
    HealthPair,
    HealthWindow,
    QualityPair,
    QualityWindow,
    ShadowSample,
)
from fleet_server.rollouts.nudge import NudgePublisher, commands
from fleet_server.rollouts.values import (
    Action,
    AssignDevices,
    Desired,
    DeviceReport,
    Nudge,
    Observations,
    RollBackDevices,
    RolloutCommand,
    RolloutState,
    RolloutStatus,
)
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)

REPORT_OVERLAP = timedelta(minutes=10)
"""Reports are read from this long before the last step: a report committed late (its
transaction began before the last step read) is still seen; the engine ignores repeats."""

_ACTION = TypeAdapter[Action](Action)


@dataclass
class TickResult:
    """What one tick did."""

    locked: bool = True
    """False: another driver held the lock, this one stepped nothing."""
    stepped: list[str] = field(default_factory=list)
    actions_stored: int = 0
    actions_done: int = 0


def load(row: Rollout) -> RolloutState:
    """The engine state of a stored rollout."""
    return rollout_engine.load_state(row.state)


def gather(
    session: Session, settings: ServerSettings, row: Rollout, state: RolloutState, now: datetime
) -> Observations:
    """What the database holds for the rollout's next step (see `engine`'s docstring)."""
    since = None if row.observed_until is None else row.observed_until - REPORT_OVERLAP
    reports = []
    members = {r.device_id for r in state.devices}
    for event in crud.rollout_reports(session, rollout_id=row.id, received_after=since):
        if event.device_id not in members:
            continue
        try:
            reports.append(
                DeviceReport(
                    device_id=event.device_id,
                    state=event.state,
                    model_version=event.model_version,
                    rollout_id=event.rollout_id,
                    at=event.received_at,
                )
            )
        except ValidationError as e:  # a row another version wrote: skip it, say so
            log.warning("rollout %s: unusable OTA status row %s: %s", row.id, event.id, e)
    window = timedelta(seconds=settings.rollouts.window_s)
    gap = settings.rollouts.max_health_gap_s
    health: list[HealthPair] = []
    quality: list[QualityPair] = []
    shadow: list[ShadowSample] = []
    for record in rollout_engine.stage_devices(state):
        if record.desired is not Desired.NEW or record.assigned_at is None:
            continue
        device_id, at = record.device_id, record.assigned_at
        # The after-window starts when the new model took over, not at the assignment: until
        # the device has downloaded, verified and smoke-tested it, the old model still reads.
        took_over = crud.activated_at(
            session,
            device_id=device_id,
            rollout_id=row.id,
            model_version=state.spec.model.version,
            received_after=at,
        )
        health_before, quality_before = _windows(session, device_id, at - window, at, gap)
        health_after, quality_after = (
            _windows(session, device_id, took_over, took_over + window, gap)
            if took_over is not None
            else (None, None)
        )
        health.append(HealthPair(device_id=device_id, before=health_before, after=health_after))
        quality.append(QualityPair(device_id=device_id, before=quality_before, after=quality_after))
        sample = evidence.shadow_sample(crud.latest_shadow(session, device_id=device_id, since=at))
        if sample is not None:
            shadow.append(sample)
    return Observations(
        reports=tuple(reports), health=tuple(health), quality=tuple(quality), shadow=tuple(shadow)
    )


def _windows(
    session: Session, device_id: str, start: datetime, end: datetime, gap_s: float
) -> tuple[HealthWindow | None, QualityWindow | None]:
    """A device's health and reading quality over [start, end), from one read of each."""
    samples = crud.health_between(session, device_id=device_id, start=start, end=end)
    stats = crud.reading_stats(session, device_id=device_id, start=start, end=end)
    return (
        evidence.health_window(samples),
        evidence.quality_window(samples, stats, max_gap_s=gap_s),
    )


def store_step(
    session: Session, row: Rollout, result: rollout_engine.StepResult, now: datetime
) -> int:
    """Write a step's state, events and actions into the rollout's transaction; the number of
    actions stored."""
    state = result.state
    row.state = rollout_engine.dump_state(state)
    row.status = state.status.value
    row.stage = state.stage
    row.updated_at = now
    row.observed_until = now
    session.add(row)
    crud.add_rollout_events(
        session,
        rows=[
            RolloutEventRow(
                rollout_id=row.id,
                at=event.at,
                kind=event.kind.value,
                stage=event.stage,
                message=event.message,
                device_ids=list(event.device_ids),
            )
            for event in result.events
        ],
    )
    crud.add_rollout_actions(
        session,
        rows=[
            RolloutAction(rollout_id=row.id, action=action.model_dump_json(), created_at=now)
            for action in result.actions
        ],
    )
    return len(result.actions)


def step_rollout(
    session: Session,
    settings: ServerSettings,
    rollout_id: str,
    now: datetime,
    command: RolloutCommand | None = None,
) -> rollout_engine.StepResult:
    """Step one rollout (with an operator's `command`) under its row lock, in `session`'s
    transaction. Raises RolloutNotFound, RolloutCommandRefused, RolloutStateInvalid."""
    row = crud.get_rollout(session, rollout_id=rollout_id, for_update=True)
    if row is None:
        raise RolloutNotFound(f"no rollout {rollout_id!r}")
    state = load(row)
    active = state.status in (RolloutStatus.RUNNING, RolloutStatus.PAUSED)
    seen = gather(session, settings, row, state, now) if active else Observations()
    result = rollout_engine.step(state, seen, now, command)
    store_step(session, row, result, now)
    return result


def step_all(engine: Engine, settings: ServerSettings, now: datetime) -> TickResult:
    """Phase 1 of a tick: step every running or paused rollout, in one transaction under the
    driver's lock (nothing when another driver holds it)."""
    result = TickResult()
    with session_scope(engine) as session:
        if not crud.try_lock_driver(session):
            result.locked = False
            return result
        for rollout_id in crud.active_rollout_ids(session):
            try:
                # A savepoint per rollout: one whose stored state cannot be read or stepped is
                # left as it is (and logged), the others still move.
                with session.begin_nested():
                    stepped = step_rollout(session, settings, rollout_id, now)
            except RolloutError as e:
                log.error("rollout %s cannot be stepped: %s", rollout_id, e)
                continue
            result.stepped.append(rollout_id)
            result.actions_stored += len(stepped.actions)
    return result


def _carry_out_one(
    session: Session, settings: ServerSettings, publisher: NudgePublisher | None, action: Action
) -> None:
    if isinstance(action, AssignDevices):
        service.assign(
            session,
            settings,
            action.device_ids,
            action.target.target_path,
            False,
            action.rollout_id,
        )
    elif isinstance(action, RollBackDevices):
        if action.to.release == 0:
            # The shipped bundle is no target of the repository: nothing can be signed for it.
            # Clearing the assignment is the most the server can do; the device keeps what it
            # runs until an operator assigns a published version (a known gap: the agent has
            # no signed "back to the shipped bundle" yet).
            log.warning(
                "rollout %s: %d devices roll back to the shipped model, which cannot be "
                "assigned: their assignments are cleared",
                action.rollout_id,
                len(action.device_ids),
            )
            service.clear_assignments(session, settings, action.device_ids)
        else:
            service.assign(
                session,
                settings,
                action.device_ids,
                action.to.target_path,
                True,
                action.rollout_id,
            )
    elif isinstance(action, Nudge):
        if publisher is None:
            return  # no broker in this process: devices find the assignment at their next poll
        for command in commands(
            rollout_id=action.rollout_id,
            action=action.action,
            model_version=action.target.version,
            target_path=action.target.target_path,
            device_ids=action.device_ids,
        ):
            publisher.publish(command)


def carry_out(
    engine: Engine,
    settings: ServerSettings,
    publisher: NudgePublisher | None,
    now: datetime,
    rollout_ids: Sequence[str] | None = None,
) -> int:
    """Phase 2: carry out the pending outbox actions in order, each in its own transaction
    under its rollout's row lock; the number carried out. An action that fails stays pending
    (and stops its rollout's later actions until the next tick)."""
    with session_scope(engine) as session:
        pending = crud.pending_actions(session)
    order = list(dict.fromkeys(a.rollout_id for a in pending))
    if rollout_ids is not None:
        order = [rid for rid in order if rid in set(rollout_ids)]
    done = 0
    for rollout_id in order:
        while True:
            try:
                with session_scope(engine) as session:
                    crud.get_rollout(session, rollout_id=rollout_id, for_update=True)
                    rows = crud.pending_actions(session, rollout_id=rollout_id)
                    if not rows:
                        break
                    row = rows[0]
                    _carry_out_one(session, settings, publisher, _ACTION.validate_json(row.action))
                    crud.mark_actions_done(session, action_ids=[row.id or 0], at=now)
            except (FleetError, ValidationError) as e:
                log.error("rollout %s: an action could not be carried out: %s", rollout_id, e)
                break
            done += 1
    return done


def drive_once(
    engine: Engine,
    settings: ServerSettings,
    publisher: NudgePublisher | None,
    now: datetime | None = None,
) -> TickResult:
    """One tick: step every active rollout, then carry out the outbox (see the docstring)."""
    when = now or utcnow()
    result = step_all(engine, settings, when)
    if result.locked:
        # Only the driver that stepped carries out: the others would only repeat its nudges.
        result.actions_done = carry_out(engine, settings, publisher, when)
    return result


class DriverThread:
    """The background thread of a ``serve`` process that ticks every ``rollouts.tick_s``."""

    def __init__(
        self, engine: Engine, settings: ServerSettings, publisher: NudgePublisher | None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._publisher = publisher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-driver", daemon=True)
        self.ticks = 0

    def start(self) -> DriverThread:
        """Start ticking."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                drive_once(self._engine, self._settings, self._publisher)
            except FleetError as e:  # the database away, say: the next tick tries again
                log.warning("rollout driver tick failed; trying again: %s", e)
            except Exception:
                log.exception("rollout driver tick failed unexpectedly; trying again")
            self.ticks += 1
            self._stop.wait(self._settings.rollouts.tick_s)

    def stop(self, timeout: float = 10) -> None:
        """Stop after the tick in progress."""
        self._stop.set()
        self._thread.join(timeout)


def nudge_assigned(
    publisher: NudgePublisher | None,
    *,
    device_ids: Sequence[str],
    model_version: str,
    target_path: str,
    rollback: bool,
    rollout_id: str | None,
) -> None:
    """Nudge devices a hand-made assignment names (POST /api/v1/models/.../assignments)."""
    if publisher is None:
        return
    action = OtaAction.ROLLBACK if rollback else OtaAction.INSTALL
    for command in commands(
        rollout_id=rollout_id,
        action=action,
        model_version=model_version,
        target_path=target_path,
        device_ids=device_ids,
    ):
        publisher.publish(command)
