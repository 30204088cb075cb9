"""The staged rollouts' tables and API shapes.

A rollout's row holds the engine's whole state as JSON text (`engine.dump_state`), with its
status and stage copied out for listing; `rollout_event` is its audit log and
`rollout_action` the outbox: the actions of a step, stored in the step's transaction and
carried out afterwards (``done_at`` set once they were), so a replica that dies in between
leaves them to the next tick.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import field_validator
from sqlalchemy import JSON, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

from fleet_protocol.topics import validate_device_id
from fleet_server.models.base import ROW_ID, TextInput, timestamp_field, without_nul
from fleet_server.rollouts.gates import GatePolicy, GateVerdict
from fleet_server.rollouts.values import (
    DEFAULT_STAGES,
    ROLLOUT_ID_PATTERN,
    Desired,
    EventKind,
    Outcome,
    RolloutStatus,
    StageSpec,
)


class Rollout(SQLModel, table=True):
    """One staged rollout: its engine state, and what a listing needs without parsing it."""

    __tablename__ = "rollout"

    id: str = Field(primary_key=True, max_length=64, description="The rollout id.")
    model_name: str = Field(max_length=64, description="Bundle name of the model rolled out.")
    model_version: str = Field(max_length=64, description="Version rolled out.")
    target_path: str = Field(max_length=255, description="Its TUF target path.")
    status: str = Field(max_length=16, index=True, description="The engine's RolloutStatus.")
    stage: int = Field(description="Index of the current stage.")
    state: str = Field(sa_column=Column(Text, nullable=False), description="engine state JSON.")
    observed_until: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field(nullable=False, now=True)
    updated_at: datetime = timestamp_field(nullable=False, now=True)


class RolloutEventRow(SQLModel, table=True):
    """One line of a rollout's audit log (an engine `RolloutEvent`)."""

    __tablename__ = "rollout_event"
    __table_args__ = (Index("ix_rollout_event_rollout", "rollout_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    rollout_id: str = Field(sa_column=Column(String(64), ForeignKey("rollout.id"), nullable=False))
    at: datetime = timestamp_field(nullable=False)
    kind: str = Field(max_length=32)
    stage: int
    message: str = Field(sa_column=Column(Text, nullable=False))
    device_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class RolloutAction(SQLModel, table=True):
    """The outbox: one action of a step (an engine `Action` as JSON), carried out later."""

    __tablename__ = "rollout_action"
    __table_args__ = (Index("ix_rollout_action_pending", "done_at", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    rollout_id: str = Field(
        sa_column=Column(String(64), ForeignKey("rollout.id"), nullable=False, index=True)
    )
    action: str = Field(sa_column=Column(Text, nullable=False), description="Action JSON.")
    created_at: datetime = timestamp_field(nullable=False, now=True)
    done_at: datetime | None = timestamp_field(nullable=True)


class DeviceSelector(SQLModel):
    """Which devices a rollout covers: all, or those with any of the tags, of a profile, or
    listed by id (the filters given all apply)."""

    all: bool = Field(default=False, description="Every enrolled, not decommissioned device.")
    tags: list[str] = Field(default_factory=list, description="Devices with any of these tags.")
    profile: str | None = Field(default=None, max_length=64, description="Devices of a profile.")
    device_ids: list[str] = Field(default_factory=list, max_length=100_000)

    @field_validator("device_ids")
    @classmethod
    def _device_ids(cls, value: list[str]) -> list[str]:
        for device_id in value:
            validate_device_id(device_id)
        return value

    @field_validator("tags", "profile")
    @classmethod
    def _no_nul(cls, value: TextInput) -> TextInput:
        return without_nul(value)


class RolloutCreate(SQLModel):
    """Body of a new rollout."""

    rollout_id: str | None = Field(
        default=None,
        schema_extra={"pattern": ROLLOUT_ID_PATTERN},
        max_length=64,
        description="Its id; default: r-{version}-{time}.",
    )
    model_name: str = Field(max_length=64, description="Bundle name of a published model.")
    model_version: str = Field(max_length=64, description="Its version.")
    selector: DeviceSelector = Field(description="Which devices.")
    stages: list[StageSpec] = Field(
        default_factory=lambda: list(DEFAULT_STAGES), min_length=1, max_length=100
    )
    policy: GatePolicy = Field(default_factory=GatePolicy, description="Gate thresholds.")
    spread_by_hash: bool = Field(default=True, description="See RolloutSpec.spread_by_hash.")
    start: bool = Field(default=True, description="Start at once (false: a draft).")


class RolloutDevicePublic(SQLModel):
    """One device of a rollout: what the rollout wants and what the device reported."""

    device_id: str
    stage: int = Field(description="Index of the stage that moves it.")
    desired: Desired
    desired_target: str | None = Field(description="Target path it should run; null: untouched.")
    previous_version: str = Field(description="What it ran before (a rollback returns to it).")
    reported: str | None = Field(description="Latest OTA state reported about this rollout.")
    reported_version: str | None
    reported_at: datetime | None
    outcome: Outcome


class RolloutPublic(SQLModel):
    """A rollout as the API lists it."""

    rollout_id: str
    model_name: str
    model_version: str
    target_path: str
    status: RolloutStatus
    stage: int = Field(description="Index of the current stage (0 = first).")
    stages: int = Field(description="How many stages.")
    pause_reason: str
    devices: int
    created_at: datetime
    updated_at: datetime


class RolloutDetail(RolloutPublic):
    """A rollout with its latest verdicts, progress counts and each device's state."""

    verdicts: list[GateVerdict] = Field(description="Latest gate verdicts of the stage.")
    progress: dict[str, int] = Field(
        description="Devices by outcome (pending, succeeded, failed) and by desired state."
    )
    device_states: list[RolloutDevicePublic]


class RolloutEventPublic(SQLModel):
    """One line of a rollout's audit log."""

    id: int
    rollout_id: str
    at: datetime
    kind: EventKind
    stage: int
    message: str
    device_ids: list[str]
