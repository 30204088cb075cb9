"""A staged rollout's typed values: what an operator asks for, the state stored between steps,
what the driver observes, and the actions and audit events a step emits.

All are pydantic models that round-trip through JSON, so the driver can keep the state in a
table, store a step's actions in an outbox, and the API can take a `RolloutSpec` as its body.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from fleet_protocol.messages import DeviceId, ModelVersion, OtaAction, OtaState
from fleet_server.rollouts.gates import (
    GatePolicy,
    GateVerdict,
    HealthPair,
    QualityPair,
    ShadowSample,
)

TARGET_PATH_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
ROLLOUT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Model(BaseModel):
    """Base of the engine's values: closed, immutable, finite numbers, JSON round-trips."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelTarget(_Model):
    """A model version as the TUF repository names it."""

    target_path: str = Field(
        pattern=TARGET_PATH_PATTERN,
        max_length=512,
        description="Target path of the bundle, models/{name}/{version}/bundle.tar.",
    )
    version: ModelVersion = Field(description="Model version.")
    release: int = Field(
        ge=0, description="Repository-wide release counter; the shipped default is 0."
    )


class StageSpec(_Model):
    """One stage: how many devices it reaches in all (cumulative) and how long it soaks."""

    percent: float | None = Field(
        default=None, gt=0, le=100, description="Share of the rollout's devices, cumulative."
    )
    count: int | None = Field(default=None, ge=1, description="Devices in all, cumulative.")
    soak_s: float = Field(
        default=3600,
        ge=0,
        le=90 * 86400,
        description="Seconds every gate must pass without a break before the next stage.",
    )

    @model_validator(mode="after")
    def _one_size(self) -> Self:
        if (self.percent is None) == (self.count is None):
            raise ValueError("a stage has exactly one of percent and count")
        return self


DEFAULT_STAGES = (
    StageSpec(percent=1),
    StageSpec(percent=10),
    StageSpec(percent=50),
    StageSpec(percent=100),
)


class RolloutDevice(_Model):
    """A device of the rollout and the model it runs before it (what a rollback returns to)."""

    device_id: DeviceId
    previous: ModelTarget = Field(description="The model the device runs before the rollout.")


class RolloutSpec(_Model):
    """What an operator asks for: a model, devices (already resolved), stages and gates."""

    rollout_id: str = Field(pattern=ROLLOUT_ID_PATTERN, description="The rollout's id.")
    model: ModelTarget = Field(description="The model version to roll out.")
    devices: tuple[RolloutDevice, ...] = Field(
        min_length=1, max_length=1_000_000, description="Devices the rollout may move."
    )
    stages: tuple[StageSpec, ...] = Field(
        default=DEFAULT_STAGES, min_length=1, max_length=100, description="Stages, in order."
    )
    policy: GatePolicy = Field(default_factory=GatePolicy, description="Gate thresholds.")
    spread_by_hash: bool = Field(
        default=True,
        description="Order devices by a hash of rollout id and device id, so stages are a "
        "stable sample of the fleet; false keeps the given order (canaries first).",
    )

    @model_validator(mode="after")
    def _devices_can_move(self) -> Self:
        seen: set[str] = set()
        for device in self.devices:
            if device.device_id in seen:
                raise ValueError(f"device {device.device_id!r} is listed twice")
            seen.add(device.device_id)
            if device.previous.release >= self.model.release:
                raise ValueError(
                    f"device {device.device_id!r} runs release {device.previous.release}, not "
                    f"older than release {self.model.release} of the rollout"
                )
        return self


class RolloutStatus(StrEnum):
    """Where a rollout stands."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


class RolloutCommand(StrEnum):
    """What an operator can ask of a rollout."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


class Desired(StrEnum):
    """What the rollout wants a device to run."""

    UNTOUCHED = "untouched"
    """Not reached yet: the rollout assigned it nothing."""
    NEW = "new"
    PREVIOUS = "previous"
    """Rolled back to the model it ran before."""


class Outcome(StrEnum):
    """How a device's install of the new model stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeviceRecord(_Model):
    """One device: the stage that moves it, what the rollout wants, what the device reported."""

    device_id: DeviceId
    previous: ModelTarget = Field(description="What a rollback returns it to.")
    stage: int = Field(ge=0, description="Index of the stage that moves it.")
    desired: Desired = Field(default=Desired.UNTOUCHED, description="What the rollout wants.")
    assigned_at: AwareDatetime | None = Field(
        default=None,
        description="When it was assigned the new model: the start of its after-window.",
    )
    install_deadline: AwareDatetime | None = Field(
        default=None, description="When a still unfinished install counts as failed."
    )
    last_nudged_at: AwareDatetime | None = Field(default=None, description="Last OTA nudge.")
    reported: OtaState | None = Field(default=None, description="Latest OTA state reported.")
    reported_version: str | None = Field(default=None, description="Version it was about.")
    reported_at: AwareDatetime | None = Field(default=None, description="When it was received.")
    timed_out: bool = Field(default=False, description="Its install deadline passed.")


class RolloutState(_Model):
    """Everything `step` needs, stored by the driver (JSON, see `dump_state`)."""

    spec: RolloutSpec
    status: RolloutStatus = RolloutStatus.DRAFT
    stage: int = Field(default=0, ge=0, description="Index of the current stage.")
    stage_ends: tuple[int, ...] = Field(description="Devices reached in all by each stage.")
    devices: tuple[DeviceRecord, ...] = Field(description="Every device, in rollout order.")
    stage_started_at: AwareDatetime | None = Field(default=None, description="Current stage.")
    passing_since: AwareDatetime | None = Field(
        default=None, description="Since when every gate passes and no install is pending."
    )
    pause_reason: str = Field(default="", description="Why it is paused.")
    verdicts: tuple[GateVerdict, ...] = Field(default=(), description="Latest gate verdicts.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A stored state is read back by another replica, maybe another version: refuse one
        # whose parts disagree rather than step it into nonsense.
        if len(self.stage_ends) != len(self.spec.stages) or self.stage >= len(self.stage_ends):
            raise ValueError(
                f"stage {self.stage} and {len(self.stage_ends)} stage ends do not fit "
                f"{len(self.spec.stages)} stages"
            )
        if sorted(r.device_id for r in self.devices) != sorted(
            d.device_id for d in self.spec.devices
        ):
            raise ValueError("the device records are not the spec's devices")
        return self


class DeviceReport(_Model):
    """An OtaStatus a device sent (a row of the OTA status table); any number per step, old
    ones included: the engine keeps each device's newest since its assignment."""

    device_id: DeviceId
    state: OtaState = Field(description="OtaStatus.state.")
    model_version: ModelVersion = Field(description="OtaStatus.model_version.")
    rollout_id: str | None = Field(default=None, description="OtaStatus.rollout_id.")
    at: AwareDatetime = Field(
        description="When the server received it: the server's clock, which `now` also reads, "
        "not the device's."
    )


class Observations(_Model):
    """What the driver read since the last step; anything about other devices is ignored."""

    reports: tuple[DeviceReport, ...] = ()
    health: tuple[HealthPair, ...] = ()
    quality: tuple[QualityPair, ...] = ()
    shadow: tuple[ShadowSample, ...] = ()


class AssignDevices(_Model):
    """Sign assignments (rollback=false) of the rollout's model for these devices."""

    kind: Literal["assign"] = "assign"
    rollout_id: str
    target: ModelTarget
    device_ids: tuple[str, ...]


class RollBackDevices(_Model):
    """Sign rollback assignments (rollback=true) of `to` for these devices."""

    kind: Literal["roll_back"] = "roll_back"
    rollout_id: str
    to: ModelTarget
    device_ids: tuple[str, ...]


class Nudge(_Model):
    """Publish an OtaCommand to these devices so they refresh now instead of at their next poll."""

    kind: Literal["nudge"] = "nudge"
    rollout_id: str
    action: OtaAction
    target: ModelTarget
    device_ids: tuple[str, ...]


Action = Annotated[AssignDevices | RollBackDevices | Nudge, Field(discriminator="kind")]


class EventKind(StrEnum):
    """Kinds of audit-log events."""

    STARTED = "started"
    STAGE_STARTED = "stage_started"
    DEVICES_TIMED_OUT = "devices_timed_out"
    SOAK_STARTED = "soak_started"
    SOAK_RESET = "soak_reset"
    STAGE_PASSED = "stage_passed"
    GATE_FAILED = "gate_failed"
    STAGE_ROLLED_BACK = "stage_rolled_back"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


class RolloutEvent(_Model):
    """One line of a rollout's audit log."""

    at: AwareDatetime
    rollout_id: str
    kind: EventKind
    stage: int
    message: str
    device_ids: tuple[str, ...] = ()
