"""The device profile's ``ota`` section: where the signed updates come from and how an update
is checked, retried, put on probation and compared with the model it replaced.

Part of the profile (edge_agent.profile.DeviceProfile.ota), kept in a module of its own for its
size; the same strict rules hold: every field has a default and a description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from fleet_protocol.config_files import StrictConfigModel


class OtaConfig(StrictConfigModel):
    """Signed over-the-air model updates: where the TUF repository is and how updates are run."""

    enabled: bool = Field(
        default=False,
        description="Follow the signed assignments of the fleet's TUF repository; off: the "
        "device runs detector.model_dir only.",
    )
    repository_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Fleet server base URL; metadata is fetched from <url>/tuf/metadata/ and "
        "model targets from <url>/tuf/targets/.",
    )
    trusted_root_file: Path = Field(
        default=Path("/var/lib/roadsign/tuf-root.json"),
        description="The trusted TUF root metadata, written at enrolment: every later root "
        "and every signature is checked from it.",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/roadsign/ota"),
        description="Where the OTA client keeps its verified metadata, partial downloads and "
        "the two model slots with their record.",
    )
    check_interval_s: float = Field(
        default=300, ge=5, le=86400, description="Seconds between checks for a new assignment."
    )
    retry_initial_s: float = Field(
        default=15,
        gt=0,
        le=86400,
        description="After a failed refresh the next check comes this many seconds later, "
        "doubling with each failure in a row (with jitter) up to check_interval_s.",
    )
    request_timeout_s: float = Field(
        default=30,
        gt=0,
        le=600,
        description="Seconds to connect, and at most between bytes, of every repository request.",
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle that signs the repository's HTTPS certificate; unset: the system's.",
    )
    max_model_mb: float = Field(
        default=256,
        gt=0,
        le=16384,
        description="Model targets whose signed length exceeds this many MiB are refused "
        "before a byte is downloaded.",
    )
    probation_s: float = Field(
        default=600,
        ge=0,
        le=7 * 86400,
        description="Seconds after an activation during which restarts and health are watched; "
        "a failure within it rolls back to the previous slot.",
    )
    probation_max_restarts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Agent restarts during probation that count as a crash loop (roll back).",
    )
    probation_min_fps_ratio: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="A new model whose frames per second fall below this share of the previous "
        "model's rolls back.",
    )
    probation_max_p95_ratio: float = Field(
        default=1.5,
        ge=1,
        le=100,
        description="A new model whose detector p95 latency exceeds this multiple of the "
        "previous model's rolls back.",
    )
    shadow_enabled: bool = Field(
        default=True,
        description="During probation, let the previous model read a sample of frames beside "
        "the new one and report how far they agree (HealthReport.shadow).",
    )
    shadow_every_n_frames: int = Field(
        default=5,
        ge=1,
        le=10000,
        description="The previous model reads every n-th frame during probation; frames "
        "arriving while it is busy are dropped (and counted), never waited for.",
    )
    shadow_queue_frames: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Sampled frames waiting for the shadow reading at most; more are dropped.",
    )
    probation_min_shadow_tracks: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Tracks both models must have read before the shadow agreement can roll "
        "a probation back.",
    )
    probation_min_shadow_agreement: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="A new model that reads fewer than this share of the compared tracks as the "
        "previous model does (same sign type and value) rolls back.",
    )

    @field_validator("repository_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"repository_url must be an http(s):// URL with a host, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ca_needs_https(self) -> Self:
        if self.ca_file is not None and urlsplit(self.repository_url).scheme != "https":
            raise ValueError(f"ca_file is set but {self.repository_url!r} is not https://")
        return self
