"""The fleet's tables (SQLModel) and their API shapes (XBase / XCreate / XPublic).

Readings, health samples, OTA status events and config reports are unique by (device_id, seq):
a message redelivered after a crash or reconnect is stored once. Timestamps are UTC
(``timestamptz``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import field_validator, model_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from fleet_protocol.topics import DEVICE_ID_PATTERN, validate_device_id
from fleet_server.security import Role

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""Row ids of the big tables: BIGINT, except on SQLite, which numbers rows itself only for an
INTEGER PRIMARY KEY (64-bit there anyway)."""


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL keeps the zone itself; SQLite (the demo's store) keeps none and would hand back
    naive datetimes, so values are converted to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value in UTC; naive values are refused rather than guessed."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must carry a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value, marked UTC where the database kept no zone."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


TextInput = str | list[str] | None
MAX_TOKEN_LIFETIME_S = 10 * 365 * 86400


def without_nul(value: TextInput) -> TextInput:
    """`value`, unless a string in it holds NUL, which PostgreSQL text cannot store.

    Refused in the API's input models (a 422 naming the field) rather than failing the INSERT.
    """
    texts = value if isinstance(value, list) else [value or ""]
    if any("\x00" in text for text in texts):
        raise ValueError("must not contain NUL characters")
    return value


def _timestamp(*, nullable: bool, now: bool = False) -> Any:
    """A UTC timestamp column: set to now when `now`, else required (or None where nullable)."""
    column: Column[datetime] = Column(UtcDateTime(), nullable=nullable)
    if now:
        return Field(default_factory=utcnow, sa_column=column)
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)


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
    created_at: datetime = _timestamp(nullable=False, now=True)
    last_seen_at: datetime | None = _timestamp(nullable=True)
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
    observed_at: datetime = _timestamp(nullable=False)
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
    received_at: datetime = _timestamp(nullable=False, now=True)
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
    observed_at: datetime = _timestamp(nullable=False)
    received_at: datetime = _timestamp(nullable=False, now=True)
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


class OtaStatusEventBase(SQLModel):
    """Where one OTA command stood on a device at one moment (a device's `OtaStatus`)."""

    device_id: str = Field(max_length=64, description="The reporting device.")
    seq: int = Field(sa_column=Column(BigInteger, nullable=False), description="Device's seq.")
    observed_at: datetime = _timestamp(nullable=False)
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


class OtaStatusEvent(OtaStatusEventBase, table=True):
    """A stored OTA status report: the per-device history a rollout reads."""

    # The unique key also serves a device's history, newest first (device_id, seq DESC).
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_otastatus_device_seq"),)

    id: int | None = Field(
        default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True)
    )
    received_at: datetime = _timestamp(nullable=False, now=True)


class OtaStatusEventPublic(OtaStatusEventBase):
    """An OTA status report as the API shows it."""

    id: int
    received_at: datetime


class ConfigReportBase(SQLModel):
    """What a device did with a desired config (a device's `ReportedConfig`)."""

    device_id: str = Field(max_length=64, description="The reporting device.")
    seq: int = Field(sa_column=Column(BigInteger, nullable=False), description="Device's seq.")
    observed_at: datetime = _timestamp(nullable=False)
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
    received_at: datetime = _timestamp(nullable=False, now=True)


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
    created_at: datetime = _timestamp(nullable=False, now=True)
    expires_at: datetime | None = _timestamp(nullable=True)
    revoked_at: datetime | None = _timestamp(nullable=True)
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
    created_at: datetime = _timestamp(nullable=False, now=True)
    expires_at: datetime = _timestamp(nullable=False)
    ended_at: datetime | None = _timestamp(nullable=True)


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


class TufMetadata(SQLModel, table=True):
    """One signed version of one TUF role, as served (``{version}.{role}.json``).

    Every version is kept: a device may ask for any root version on its way up, and what was
    signed stays auditable. The newest version of a role is the one in force.
    """

    __tablename__ = "tuf_metadata"
    __table_args__ = (UniqueConstraint("role", "version", name="uq_tuf_metadata_role_version"),)

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(max_length=64, description="root, targets, snapshot, timestamp, director...")
    version: int = Field(description="The metadata's version number.")
    content: bytes = Field(
        sa_column=Column("bytes", LargeBinary, nullable=False), description="The signed JSON."
    )
    expires: datetime = _timestamp(nullable=False)
    created_at: datetime = _timestamp(nullable=False, now=True)


class TufTarget(SQLModel, table=True):
    """A target file of the repository (a model bundle's tar), its bytes in the database so
    that every replica serves it."""

    __tablename__ = "tuf_target"

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(max_length=255, unique=True, description="models/{name}/{version}/bundle.tar")
    sha256: str = Field(max_length=64, description="sha256 of the bytes, hex.")
    length: int = Field(sa_column=Column(BigInteger, nullable=False), description="Bytes.")
    content: bytes = Field(sa_column=Column("bytes", LargeBinary, nullable=False))
    custom: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="The TargetFile's custom field, as signed.",
    )
    created_at: datetime = _timestamp(nullable=False, now=True)


class ModelVersionBase(SQLModel):
    """A published model version: what it is and where it came from."""

    name: str = Field(max_length=64, description="Bundle name.")
    version: str = Field(max_length=64, description="Model version.")
    release: int = Field(
        unique=True, description="Repository-wide publication counter; orders versions."
    )
    target_path: str = Field(max_length=255, description="Its TUF target path.")
    lineage: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="The signed roadsign custom: formats, metrics, MLflow run and model.",
    )


class ModelVersion(ModelVersionBase, table=True):
    """A stored model version."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_version_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    published_at: datetime = _timestamp(nullable=False, now=True)


class ModelVersionPublic(ModelVersionBase):
    """A model version as the API lists it, with the devices running it."""

    published_at: datetime
    running_on: list[str] = Field(
        default_factory=list,
        description="Devices whose latest health report names this version as running.",
    )


class AssignmentRequest(SQLModel):
    """Body of an assignment: which devices must run the version."""

    device_ids: list[str] = Field(min_length=1, max_length=10_000, description="Device ids.")
    rollback: bool = Field(
        default=False, description="True: an older release on purpose (a rollback)."
    )
    rollout_id: str | None = Field(
        default=None, max_length=64, description="The rollout this assignment belongs to."
    )

    @field_validator("device_ids")
    @classmethod
    def _device_ids(cls, value: list[str]) -> list[str]:
        for device_id in value:
            validate_device_id(device_id)
        return value

    @field_validator("rollout_id")
    @classmethod
    def _no_nul(cls, value: TextInput) -> TextInput:
        return without_nul(value)


class AssignmentsSigned(SQLModel):
    """What an assignment request signed."""

    target_path: str = Field(description="The model target assigned.")
    device_ids: list[str] = Field(description="Devices whose assignment now names it.")
    bins: list[str] = Field(description="Director bins re-signed.")
    snapshot_version: int = Field(description="The snapshot version that lists them.")
