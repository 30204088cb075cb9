"""Pydantic models of every message on the wire, one per `MessageKind`.

Every message shares one envelope: the schema version, the device id, a per-device sequence number
that only grows (the receiver de-duplicates redeliveries by (device id, seq)) and a UTC timestamp of
the event. Models are strict and closed: an unknown field, a string where a number belongs or a
non-finite number is an error, so both sides agree byte for byte on what a message means. A change
that adds a field bumps `SCHEMA_VERSION`.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from fleet_protocol.taxonomy import GTSRB_CLASS_COUNT, SignType, SpeedUnit, takes_numeric_value
from fleet_protocol.topics import DEVICE_ID_PATTERN, MessageKind

SCHEMA_VERSION: Literal[1] = 1
MAX_SEQ = 2**63 - 1  # fits a signed 64-bit database column
MAX_CROP_BYTES = 32 * 1024
_JPEG_MAGIC = b"\xff\xd8\xff"
_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
_TUF_TARGET_RE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


# Enum, tuple and UUID fields take their plain forms ("speed_limit", a list, a UUID string) also
# from Python; strict mode would demand instances when messages are built in code.
Lax = Field(strict=False)


def _decode_jpeg(value: object) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"crop is not valid base64: {e}") from e
    else:
        raise ValueError("crop must be base64 text (JSON) or bytes (Python)")
    if len(data) > MAX_CROP_BYTES:
        raise ValueError(f"crop is {len(data)} bytes, the limit is {MAX_CROP_BYTES}")
    if not data.startswith(_JPEG_MAGIC):
        raise ValueError("crop is not a JPEG (no FF D8 FF start-of-image marker)")
    return data


def _encode_jpeg(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


JpegBytes = Annotated[
    bytes,
    PlainValidator(_decode_jpeg),
    PlainSerializer(_encode_jpeg, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": "image/jpeg",
            "maxLength": (MAX_CROP_BYTES + 2) // 3 * 4,
        }
    ),
]
"""A small JPEG: bytes in Python, base64 text on the wire."""

DeviceId = Annotated[
    str,
    Field(
        pattern=DEVICE_ID_PATTERN,
        description="The device's id: 1-64 of A-Z a-z 0-9 . _ -, also its topic level.",
        examples=["rsu-a9-km12"],
    ),
]
ModelVersion = Annotated[str, Field(pattern=_VERSION_PATTERN, examples=["2026.11.0"])]
ShortText = Annotated[str, Field(max_length=256)]


class WireModel(BaseModel):
    """Base of every wire model: strict, closed, immutable, finite numbers only."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )


class Envelope(WireModel):
    """The fields every message starts with."""

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Version of the message schema; this is version 1."
    )
    device_id: DeviceId
    seq: int = Field(
        ge=0,
        le=MAX_SEQ,
        description="Per-device sequence number (one counter for all kinds) that only grows; "
        "receivers drop a "
        "(device_id, seq) they have already stored.",
    )
    timestamp: AwareDatetime = Field(
        description="When the event happened, UTC (RFC 3339 with an offset; stored as UTC)."
    )

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class ModelRef(WireModel):
    """Which model produced something: its version and the sha256 of its artifact."""

    version: ModelVersion = Field(description="Model version as registered and shipped.")
    sha256: str = Field(pattern=_SHA256_PATTERN, description="sha256 of the model artifact.")


class GeoPoint(WireModel):
    """A WGS84 position."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees.")
    accuracy_m: float | None = Field(
        default=None, ge=0, description="Horizontal accuracy in metres, where known."
    )


BoundingBox = tuple[float, float, float, float]


class Reading(Envelope):
    """One physical sign passed, as read over its whole track."""

    timestamp: AwareDatetime = Field(
        description="When the sign was seen (RFC 3339 with an offset; stored as UTC): when the "
        "frame of `bbox` and `crop_jpeg`, the sign's best view, was captured; not when the "
        "reading was sent, which can be seconds later. A replayed video's frames are seen when "
        "they are decoded."
    )
    sign_type: Annotated[SignType, Lax] = Field(description="The sign's meaning.")
    gtsrb_class_id: int | None = Field(
        default=None,
        ge=0,
        lt=GTSRB_CLASS_COUNT,
        description="The GTSRB class (0-42) where the sign is one of them.",
    )
    value: float | None = Field(
        default=None,
        gt=0,
        lt=1000,
        description="The number on the sign (the speed limit); any value, not only GTSRB's.",
    )
    unit: SpeedUnit | None = Field(default=None, description="Unit of `value`.")
    text: ShortText | None = Field(default=None, description="OCR text read on the sign.")
    confidence: float = Field(ge=0, le=1, description="Confidence of the whole reading, 0-1.")
    sources_disagree: bool = Field(
        default=False,
        description="True when the crop classifier and the OCR read different things; the "
        "confidence has been lowered accordingly.",
    )
    bbox: Annotated[BoundingBox, Lax] = Field(
        description="[x1, y1, x2, y2] in pixels of the source image, on the frame where the sign "
        "was seen best."
    )
    track_id: int = Field(ge=0, le=MAX_SEQ, description="Tracker id of the sign on the device.")
    frames_seen: int = Field(ge=1, description="Frames in which the sign was detected.")
    model: ModelRef = Field(description="The detector model that made the reading.")
    location: GeoPoint | None = Field(default=None, description="Where, where known.")
    crop_jpeg: JpegBytes | None = Field(
        default=None, description="Small JPEG crop of the sign, base64 on the wire."
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        x1, y1, x2, y2 = self.bbox
        if min(self.bbox) < 0 or x2 <= x1 or y2 <= y1:
            raise ValueError(
                f"bbox {list(self.bbox)} must be [x1, y1, x2, y2], 0 <= x1 < x2, 0 <= y1 < y2"
            )
        if (self.value is None) != (self.unit is None):
            raise ValueError("value and unit come together: both set or both null")
        if self.value is not None and not takes_numeric_value(self.sign_type):
            raise ValueError(f"sign type {self.sign_type.value!r} carries no numeric value")
        return self


class CameraState(StrEnum):
    """State of the frame source."""

    OK = "ok"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


class PipelineStage(StrEnum):
    """Stages whose latency the agent reports."""

    DECODE = "decode"
    DETECT = "detect"
    CLASSIFY = "classify"
    OCR = "ocr"
    TOTAL = "total"


class LatencyStats(WireModel):
    """Latency percentiles of one stage over the last reporting interval."""

    p50_ms: float = Field(ge=0, description="Median, milliseconds.")
    p95_ms: float = Field(ge=0, description="95th percentile, milliseconds.")


class ShadowReport(WireModel):
    """During probation, how the previous model reads the same frames as the new one.

    The agent runs the model it replaced on a sample of frames and pairs its readings with the
    new model's on the same track: a track agrees when both read the same sign type and value.
    """

    previous_model: ModelRef = Field(description="The model the new one replaced.")
    frames_compared: int = Field(ge=0, description="Frames both models read, this probation.")
    tracks_compared: int = Field(
        ge=0, description="Tracks both models read at least once, this probation."
    )
    tracks_agreeing: int = Field(
        ge=0, description="Of those, tracks where both read the same sign type and value."
    )

    @model_validator(mode="after")
    def _agreeing_within_compared(self) -> Self:
        if self.tracks_agreeing > self.tracks_compared:
            raise ValueError(
                f"tracks_agreeing {self.tracks_agreeing} exceeds tracks_compared "
                f"{self.tracks_compared}"
            )
        return self


class HealthReport(Envelope):
    """Periodic health of a device."""

    agent_version: ModelVersion = Field(description="Version of the agent software.")
    model: ModelRef | None = Field(default=None, description="Detector model running, if any.")
    uptime_s: float = Field(ge=0, description="Seconds since the agent started.")
    fps: float = Field(ge=0, description="Frames processed per second over the interval.")
    frames_dropped: int = Field(
        default=0, ge=0, description="Frames dropped under load since start."
    )
    stage_latency_ms: dict[Annotated[PipelineStage, Lax], LatencyStats] = Field(
        default_factory=dict, description="Latency percentiles per pipeline stage."
    )
    cpu_percent: float = Field(ge=0, description="Agent CPU use; 100 is one full core.")
    rss_mb: float = Field(ge=0, description="Agent resident memory, MiB.")
    temperature_c: float | None = Field(
        default=None, description="SoC temperature where the OS exposes it, degrees C."
    )
    disk_free_mb: float = Field(ge=0, description="Free disk where the outbox lives, MiB.")
    camera_state: Annotated[CameraState, Lax] = Field(description="State of the frame source.")
    outbox_depth: int = Field(ge=0, description="Messages waiting in the outbox.")
    outbox_dropped: int = Field(
        ge=0, description="Messages dropped from the full outbox since start."
    )
    shadow: ShadowReport | None = Field(
        default=None,
        description="During a new model's probation: its agreement with the model it replaced.",
    )


StatusReason = Literal["connected", "shutdown", "connection_lost"]


class DeviceState(StrEnum):
    """Whether a device is connected."""

    ONLINE = "online"
    OFFLINE = "offline"


class StatusMessage(Envelope):
    """Birth (on connect) or death (clean shutdown, or the last will) of a device."""

    state: Annotated[DeviceState, Lax] = Field(description="Online or offline.")
    reason: StatusReason = Field(
        description="connected: birth; shutdown: clean exit; connection_lost: the last will."
    )
    agent_version: ModelVersion = Field(description="Version of the agent software.")
    profile: ShortText | None = Field(default=None, description="Device profile name.")
    model: ModelRef | None = Field(default=None, description="Detector model running, if any.")

    @model_validator(mode="after")
    def _state_matches_reason(self) -> Self:
        online = self.state is DeviceState.ONLINE
        if online != (self.reason == "connected"):
            raise ValueError(f"state {self.state.value!r} contradicts reason {self.reason!r}")
        return self


class OtaAction(StrEnum):
    """What an OTA command asks for."""

    INSTALL = "install"
    ROLLBACK = "rollback"


class OtaCommand(Envelope):
    """Server to device: a nudge to refresh the signed metadata and follow its assignment.

    The command carries no authority. A device installs only what the TUF repository's signed
    assignment for that device names; a command naming another model, or an older one without
    a signed rollback, is answered with a ``failed`` status and changes nothing.
    """

    command_id: Annotated[UUID, Lax] = Field(description="Id the device echoes in its OTA status.")
    action: Annotated[OtaAction, Lax] = Field(description="Install or roll back.")
    model_version: ModelVersion = Field(description="Version to end up running.")
    target_path: str = Field(
        max_length=512,
        description="Path of the model bundle among the TUF repository's targets.",
        examples=["models/roadsign-detector/2026.11.0/bundle.tar.gz"],
    )
    rollout_id: ShortText | None = Field(default=None, description="Staged rollout it belongs to.")

    @field_validator("target_path")
    @classmethod
    def _relative_target(cls, value: str) -> str:
        parts = value.split("/")
        if _TUF_TARGET_RE.fullmatch(value) is None or ".." in parts or "." in parts:
            raise ValueError(f"target path {value[:100]!r} is not a plain relative path")
        return value


class OtaState(StrEnum):
    """Where an update stands on the device, in the order a good update passes through."""

    RECEIVED = "received"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    STAGED = "staged"
    SMOKE_TESTING = "smoke_testing"
    ACTIVE = "active"
    PROBATION_PASSED = "probation_passed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class OtaStatus(Envelope):
    """Device to server: progress and outcome of an OTA command."""

    command_id: Annotated[UUID, Lax] = Field(
        description=(
            "The command this reports on; for an update the device found by itself (a periodic "
            "check, or catching up after being offline), an id derived from its assignment."
        )
    )
    state: Annotated[OtaState, Lax] = Field(description="Where the update stands.")
    model_version: ModelVersion = Field(description="Version the update is about.")
    rollout_id: ShortText | None = Field(
        default=None, description="Staged rollout the signed assignment belongs to, if any."
    )
    detail: str = Field(default="", max_length=1000, description="Why, on failure or rollback.")
    running_model: ModelRef | None = Field(default=None, description="Model running now.")


class DesiredConfig(Envelope):
    """Server to device: settings to apply on top of the device's profile."""

    config_version: int = Field(ge=1, le=MAX_SEQ, description="Grows with every change.")
    settings: dict[str, JsonValue] = Field(
        description="Partial profile, nested as in the profile YAML; the device validates it "
        "against its own schema and reports the outcome."
    )


class ReportedConfig(Envelope):
    """Device to server: the outcome of a desired config."""

    config_version: int = Field(ge=0, le=MAX_SEQ, description="The desired version handled.")
    applied: bool = Field(description="True when the settings are now in effect.")
    errors: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50, description="Why not, one line per bad field."
    )


Message = (
    StatusMessage | Reading | HealthReport | OtaCommand | OtaStatus | DesiredConfig | ReportedConfig
)

MESSAGE_MODELS: dict[MessageKind, type[Envelope]] = {
    MessageKind.STATUS: StatusMessage,
    MessageKind.READINGS: Reading,
    MessageKind.HEALTH: HealthReport,
    MessageKind.OTA_COMMAND: OtaCommand,
    MessageKind.OTA_STATUS: OtaStatus,
    MessageKind.CONFIG_DESIRED: DesiredConfig,
    MessageKind.CONFIG_REPORTED: ReportedConfig,
}
