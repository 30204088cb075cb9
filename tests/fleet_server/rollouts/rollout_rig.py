"""A rollout stepped through time for the engine's tests: a spec of 20 devices, OTA reports,
healthy or slow evidence, and a rig that checks every step is idempotent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fleet_protocol.messages import OtaState
from fleet_server.rollouts.engine import (
    StepResult,
    stage_devices,
    step,
)
from fleet_server.rollouts.gates import (
    GatePolicy,
    HealthPair,
    HealthWindow,
    QualityPair,
    QualityWindow,
)
from fleet_server.rollouts.values import (
    AssignDevices,
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
