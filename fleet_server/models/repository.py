"""The TUF repository's tables (signed metadata, targets) and published model versions, with
the API shapes of assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_protocol.topics import validate_device_id
from fleet_server.models.base import TextInput, timestamp_field, without_nul


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
    expires: datetime = timestamp_field(nullable=False)
    created_at: datetime = timestamp_field(nullable=False, now=True)


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
    created_at: datetime = timestamp_field(nullable=False, now=True)


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
    published_at: datetime = timestamp_field(nullable=False, now=True)


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
