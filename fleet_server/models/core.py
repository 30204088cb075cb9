"""The fleet's device-side tables and their API shapes: devices, readings, health, OTA status
events, config reports, API tokens and dashboard sessions.

Readings, health samples, OTA status events and config reports are unique by (device_id, seq):
a message redelivered after a crash or reconnect is stored once. Timestamps are UTC
(``timestamptz``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import field_validator, model_validator
from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, UniqueConstraint, Uuid
from sqlmodel import Field, SQLModel

from fleet_protocol.topics import DEVICE_ID_PATTERN, validate_device_id
from fleet_server.models.base import (
    MAX_TOKEN_LIFETIME_S,
    ROW_ID,
    TextInput,
    timestamp_field,
    without_nul,
)
from fleet_server.security import Role


class DeviceBase(SQLModel):
    """What an operator says about a device."""

    device_id: str = Field(
        max_length=64,
        schema_extra={"pattern": DEVICE_ID_PATTERN},
        unique=True,
        index=True,
        description="Device id; also its MQTT user and topic level.",
    )
    profile: str | None = Field(default=None, max_length=64, description="Device profile name.")
    tags: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Free tags for filtering (route, depot, region).",
    )

    @field_validator("device_id")
    @classmethod
    def _one_topic_level(cls, value: str) -> str:
        return validate_device_id(value)

    @field_validator("profile", "tags")
    @classmethod
    def _no_nul(cls, value: TextInput) -> TextInput:
        return without_nul(value)


class Device(DeviceBase, table=True):
    """A device of the fleet and its last known state."""

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(
        default="unknown",
        max_length=16,
        index=True,
        description="online, offline, unknown or decommissioned.",
    )
    created_at: datetime = timestamp_field(nullable=False, now=True)
    last_seen_at: datetime | None = timestamp_field(nullable=True)
    agent_version: str | None = Field(default=None, max_length=64)
    model_version: str | None = Field(default=None, max_length=64)
    model_sha256: str | None = Field(default=None, max_length=64)
    broker_password_hash: str | None = Field(
        default=None, max_length=256, description="Mosquitto $7$ hash of the device's password."
    )


class DeviceCreate(DeviceBase):
    """Body of an enrolment."""


class DevicePublic(DeviceBase):
    """A device as the API shows it."""

    id: int
    status: str
    created_at: datetime
    last_seen_at: datetime | None
    agent_version: str | None
    model_version: str | None


class ReadingBase(SQLModel):
    """One physical sign a device read."""

    # No index of its own: the (device_id, seq) and (device_id, observed_at) indexes lead with it.
    device_id: str = Field(max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    observed_at: datetime = timestamp_field(nullable=False)
    sign_type: str = Field(max_length=32)
    gtsrb_class_id: int | None = None
    value: float | None = None
    unit: str | None = Field(default=None, max_length=8)
    text: str | None = Field(default=None, max_length=256)
    confidence: float
    sources_disagree: bool = False
    x1: float
    y1: float
    x2: float
    y2: float
    track_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    frames_seen: int
    model_version: str = Field(max_length=64)
    model_sha256: str = Field(max_length=64)
    lat: float | None = None
    lon: float | None = None


class Reading(ReadingBase, table=True):
    """A stored reading."""

    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_reading_device_seq"),
        Index("ix_reading_observed", "observed_at"),
        Index("ix_reading_device_observed", "device_id", "observed_at"),
        Index("ix_reading_type_observed", "sign_type", "observed_at"),
        Index("ix_reading_position", "lat", "lon"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    received_at: datetime = timestamp_field(nullable=False, now=True)
    crop_jpeg: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class ReadingPublic(ReadingBase):
    """A reading as the API shows it."""

    id: int
    received_at: datetime


class HealthSample(SQLModel, table=True):
    """One health report of a device."""

    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_health_device_seq"),
        Index("ix_health_device_observed", "device_id", "observed_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    device_id: str = Field(max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    observed_at: datetime = timestamp_field(nullable=False)
    received_at: datetime = timestamp_field(nullable=False, now=True)
    fps: float
    cpu_percent: float
    rss_mb: float
    temperature_c: float | None = None
    disk_free_mb: float
    camera_state: str = Field(max_length=16)
    outbox_depth: int
    outbox_dropped: int
    frames_dropped: int
    uptime_s: float
    stage_latency_ms: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    # HealthReport.shadow, during a probation: the previous model beside the new one.
    shadow_previous_model: str | None = Field(default=None, max_length=64)
    shadow_frames_compared: int | None = Field(default=None, sa_column=Column(BigInteger))
    shadow_tracks_compared: int | None = Field(default=None, sa_column=Column(BigInteger))
    shadow_tracks_agreeing: int | None = Field(default=None, sa_column=Column(BigInteger))


class OtaStatusEventBase(SQLModel):
    """Where one OTA command stood on a device at one moment (a device's `OtaStatus`)."""

    device_id: str = Field(max_length=64, description="The reporting device.")
    seq: int = Field(sa_column=Column(BigInteger, nullable=False), description="Device's seq.")
    observed_at: datetime = timestamp_field(nullable=False)
    command_id: uuid.UUID = Field(
        sa_column=Column(Uuid, nullable=False), description="The OTA command reported on."
    )
    state: str = Field(max_length=16, description="received, downloading, ..., active, failed.")
    model_version: str = Field(max_length=64, description="Version the command is about.")
    detail: str = Field(default="", max_length=1000, description="Why, on failure or rollback.")
    running_model_version: str | None = Field(
        default=None, max_length=64, description="Model the device runs now, where it said."
    )
    running_model_sha256: str | None = Field(default=None, max_length=64)
    rollout_id: str | None = Field(
        default=None, max_length=64, description="The staged rollout it belongs to, if any."
    )


class OtaStatusEvent(OtaStatusEventBase, table=True):
    """A stored OTA status report: the per-device history a rollout reads."""

    # The unique key also serves a device's history, newest first (device_id, seq DESC).
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_otastatus_device_seq"),
        # What a rollout's driver reads each tick: its devices' reports since the last one.
        Index("ix_otastatus_rollout_received", "rollout_id", "received_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    received_at: datetime = timestamp_field(nullable=False, now=True)


class OtaStatusEventPublic(OtaStatusEventBase):
    """An OTA status report as the API shows it."""

    id: int
    received_at: datetime


class ConfigReportBase(SQLModel):
    """What a device did with a desired config (a device's `ReportedConfig`)."""

    device_id: str = Field(max_length=64, description="The reporting device.")
    seq: int = Field(sa_column=Column(BigInteger, nullable=False), description="Device's seq.")
    observed_at: datetime = timestamp_field(nullable=False)
    config_version: int = Field(
        sa_column=Column(BigInteger, nullable=False), description="The desired version handled."
    )
    applied: bool = Field(description="True when the settings are in effect on the device.")
    errors: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Why not, one line per bad field.",
    )


class ConfigReport(ConfigReportBase, table=True):
    """A stored config report; a device's reported config is its newest (highest seq)."""

    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_configreport_device_seq"),)

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    received_at: datetime = timestamp_field(nullable=False, now=True)


class ConfigReportPublic(ConfigReportBase):
    """A config report as the API shows it."""

    id: int
    received_at: datetime


class ApiTokenBase(SQLModel):
    """What an admin says about a token."""

    name: str = Field(min_length=1, max_length=64, description="Who or what holds the token.")
    role: str = Field(max_length=16, description="admin or reader.")

    @field_validator("name")
    @classmethod
    def _no_nul(cls, value: TextInput) -> TextInput:
        return without_nul(value)


class ApiToken(ApiTokenBase, table=True):
    """An API token: only its hash is stored.

    ``kind`` is ``bootstrap`` for the token the settings configure (a new one revokes the
    previous one at start-up) and ``issued`` for those made through the API or the CLI.
    """

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(
        default="issued",
        max_length=16,
        sa_column_kwargs={"server_default": "issued"},
        description="bootstrap or issued.",
    )
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = timestamp_field(nullable=False, now=True)
    expires_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)
    created_by_id: int | None = Field(
        default=None, foreign_key="apitoken.id", description="The token that issued this one."
    )


class ApiTokenCreate(ApiTokenBase):
    """Body of a token issue: a name, a role and, optionally, when it stops working."""

    role: Role = Field(description="admin (everything) or reader (read only).")
    expires_at: datetime | None = Field(
        default=None,
        description="When the token stops working (with a timezone). Never after the issuing "
        "token expires: a later expiry, or none, becomes the issuer's.",
    )
    expires_in_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_LIFETIME_S,
        description="Or: seconds from now until it stops working (at most ten years, and never "
        "after the issuing token expires).",
    )

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("must carry a timezone, e.g. 2027-01-01T00:00:00Z")
        try:
            return value.astimezone(UTC)
        except OverflowError as e:  # 9999-12-31T23:00-05:00 is past the last datetime in UTC
            raise ValueError("is out of range") from e

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give expires_at or expires_in_s, not both")
        return self

    def expiry(self, now: datetime) -> datetime | None:
        """When the token expires, given the time it is issued."""
        if self.expires_in_s is not None:
            return now + timedelta(seconds=self.expires_in_s)
        return self.expires_at


class ApiTokenPublic(ApiTokenBase):
    """A token as the API lists it: never the secret, never its hash."""

    id: int
    kind: str = Field(description="bootstrap (the configured admin token) or issued.")
    created_at: datetime
    expires_at: datetime | None = Field(
        description="When it stops working (null: never); never after the token that issued it."
    )
    revoked_at: datetime | None = Field(
        description="When it was revoked, by hand or with the token that issued it."
    )
    created_by_id: int | None = Field(
        description="The token that issued this one; revoking that revokes this one too. Null "
        "for the bootstrap token and tokens issued with the CLI."
    )


class ApiTokenIssued(ApiTokenPublic):
    """A token just issued: the only time its secret is shown."""

    token: str = Field(description="The secret: send it as a bearer token. Shown only now.")


class ApiTokenRevoked(ApiTokenPublic):
    """A token just revoked, and what went with it."""

    revoked_with_it: list[int] = Field(
        description="Ids of the tokens it issued, directly or through others, that this "
        "revocation revoked (those revoked before are not listed)."
    )


class DashboardSession(SQLModel, table=True):
    """A dashboard login: the cookie holds the signed id, the database only its hash.

    It ends at logout (``ended_at``), at ``expires_at``, and with its token.
    """

    id: int | None = Field(default=None, primary_key=True)
    session_hash: str = Field(max_length=64, unique=True, index=True)
    token_id: int = Field(foreign_key="apitoken.id", index=True)
    created_at: datetime = timestamp_field(nullable=False, now=True)
    expires_at: datetime = timestamp_field(nullable=False)
    ended_at: datetime | None = timestamp_field(nullable=True)


class HealthPublic(SQLModel):
    """A health sample as the API shows it."""

    device_id: str
    seq: int
    observed_at: datetime
    fps: float
    cpu_percent: float
    rss_mb: float
    temperature_c: float | None
    disk_free_mb: float
    camera_state: str
    outbox_depth: int
    outbox_dropped: int
    frames_dropped: int
    uptime_s: float
    stage_latency_ms: dict[str, Any]


class DeviceTagsUpdate(SQLModel):
    """New tags of a device."""

    tags: list[str] = Field(description="The device's complete tag list.")

    @field_validator("tags")
    @classmethod
    def _no_nul(cls, value: TextInput) -> TextInput:
        return without_nul(value)


class DeviceBundle(SQLModel):
    """What a new device needs to join the fleet; the password is shown only here, once."""

    device: DevicePublic
    username: str = Field(description="Broker user name (the device id).")
    password: str | None = Field(description="Broker password; null where the broker is open.")
    broker_url: str = Field(description="Broker URL the device connects to.")
    ca_certificate: str | None = Field(description="PEM of the CA that signs the broker.")
    tuf_root: dict[str, Any] | None = Field(
        description="The TUF repository's current root metadata, the device's trust anchor "
        "(bootstrap of its TUF client); null while the repository is not initialised."
    )
