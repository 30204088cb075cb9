"""The device profile: the strict schema of an agent's configuration.

A profile (one YAML file in ``firmware_configs/``) says what a class of device runs: which detector
backend and model format, how many threads and what input size, which camera, how often to report,
how big the outbox may grow, which broker with which TLS files and, for roadside units, where the
device stands. Every field has a default and a description; an unknown or wrong field is refused
with its name and line (`roadsign-agent validate-config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_agent.api_guard import is_loopback_host
from edge_agent.bundle import shipped_bundle
from edge_agent.profile_ota import OtaConfig
from edge_agent.reading.tiling import TilingPolicy
from fleet_protocol.config_files import StrictConfigModel, load_config
from fleet_protocol.topics import DEVICE_ID_PATTERN

ENV_PREFIX = "ROADSIGN_AGENT__"
"""Environment variables ``ROADSIGN_AGENT__SECTION__FIELD`` override profile fields."""

_LANGUAGE_RE = re.compile(r"[a-z]{3}(_[a-z]+)?")
BROKER_SCHEMES = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


ExecutionProvider = Literal[
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
]


def _cpu_only() -> list[ExecutionProvider]:
    return ["CPUExecutionProvider"]


class IdentityConfig(StrictConfigModel):
    """Who the device is."""

    device_id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)] | None = Field(
        default=None,
        description="Device id, as enrolled in the fleet; unset: the host name, with characters "
        "a device id cannot hold (outside A-Z a-z 0-9 . _ -) turned into '-' and cut to 64.",
    )


class TilingConfig(StrictConfigModel):
    """How the detector looks at a frame larger than its input (docs/training.md, "Inference
    resolution"): overlapping full-resolution tiles of the input's size, plus a coarse pass over
    the whole frame shrunk to the input."""

    enabled: bool = Field(
        default=True,
        description="Look at full-resolution tiles; off: only the whole frame, shrunk to the "
        "detector's input (far signs shrink below what it finds).",
    )
    tile_px: int | None = Field(
        default=None,
        ge=64,
        le=4096,
        description="Tile side in frame pixels; unset: the detector's input size, so tiles are "
        "seen at full resolution.",
    )
    overlap_px: int = Field(
        default=96,
        ge=0,
        le=1024,
        description="Pixels neighbouring tiles share at least: a sign no larger than this is "
        "whole in some tile; larger ones are left to the coarse pass.",
    )
    coarse_pass: bool = Field(
        default=True,
        description="Also look at the whole frame shrunk to the input, every frame: near signs "
        "larger than the overlap, which tile borders would cut.",
    )
    interleave: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Spread a frame's tiles over this many frames of a stream (each frame looks "
        "at every n-th tile; the tracker bridges the rest). A still photo looks at all of them.",
    )

    min_frame_px: int | None = Field(
        default=None,
        ge=64,
        le=16384,
        description="Tile only frames whose longer side is at least this; unset: twice the "
        "tile side (a 640x480 camera is read whole by a 416 px detector, a 1280x720 one tiled).",
    )

    band_top: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Top of the band of the frame tiles cover, as a fraction of its height "
        "(0: the top edge); above it only the coarse pass looks (the sky, for a dashcam).",
    )
    band_bottom: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Bottom of the band tiles cover, a fraction of the height (1: the bottom "
        "edge); below it only the coarse pass looks (the bonnet and the road surface).",
    )

    @model_validator(mode="after")
    def _band_is_a_band(self) -> Self:
        if self.band_top >= self.band_bottom:
            raise ValueError(
                f"band_top {self.band_top} must be above (less than) band_bottom {self.band_bottom}"
            )
        return self

    def policy(self, *, tiles: bool = True) -> TilingPolicy:
        """The policy the detector runs under; `tiles` False: whole frames only, whatever
        `enabled` says (``--no-tiles``)."""
        return TilingPolicy(
            band=(self.band_top, self.band_bottom),
            min_frame_px=self.min_frame_px,
            enabled=self.enabled and tiles,
            tile_px=self.tile_px,
            overlap_px=self.overlap_px,
            coarse_pass=self.coarse_pass,
            interleave=self.interleave,
        )


class DetectorConfig(StrictConfigModel):
    """The sign detector: backend, model artifact and its inference settings."""

    backend: Literal["auto", "openvino", "onnxruntime"] = Field(
        default="auto",
        description="Inference runtime; auto picks OpenVINO on x86 and ONNX Runtime elsewhere.",
    )
    model_dir: Path = Field(
        default_factory=shipped_bundle,
        description="Model bundle directory (artifacts plus metadata sidecars); unset: the "
        "bundle shipped inside the agent package, wherever it is installed. A relative path is "
        "taken from the working directory.",
    )
    model_format: Literal["auto", "openvino_int8", "openvino_fp32", "onnx_int8", "onnx_fp32"] = (
        Field(
            default="auto",
            description="Artifact of the bundle to run; auto takes the backend's INT8 model.",
        )
    )
    execution_providers: list[ExecutionProvider] = Field(
        default_factory=_cpu_only,
        min_length=1,
        description="ONNX Runtime execution providers for the bundle's models, in order of "
        "preference: those the installed ONNX Runtime lacks are skipped with a warning, and a "
        "list it has none of is refused at start. The OpenVINO backend runs on its CPU plugin "
        "and does not use them.",
    )
    threads: int = Field(default=2, ge=1, le=64, description="Inference threads.")
    input_size: int | None = Field(
        default=None,
        ge=128,
        le=1280,
        multiple_of=32,
        description="Square network input in pixels (multiple of 32) the model must have; "
        "unset: the bundle's own. A model is exported at one size, so a bundle of another size "
        "is refused at start rather than run at a size nobody chose.",
    )
    confidence_threshold: float = Field(
        default=0.25, gt=0, lt=1, description="Detections below this score are dropped."
    )
    iou_threshold: float = Field(
        default=0.45, gt=0, lt=1, description="IoU above which NMS suppresses a box."
    )
    tiling: TilingConfig = Field(
        default_factory=TilingConfig, description="Tiles and coarse pass for large frames."
    )

    @model_validator(mode="after")
    def _runtime_reads_format(self) -> Self:
        # OpenVINO reads ONNX files too; ONNX Runtime cannot read OpenVINO IR.
        if self.backend == "onnxruntime" and self.model_format.startswith("openvino"):
            raise ValueError(
                f"model_format {self.model_format!r} is OpenVINO IR, which the onnxruntime "
                "backend cannot load; use onnx_int8 or onnx_fp32"
            )
        return self


class CameraConfig(StrictConfigModel):
    """The frame source."""

    source: str = Field(
        default="0",
        min_length=1,
        description="Camera index (0), rtsp:// or http(s):// stream URL, video file or image "
        "folder.",
    )
    kind: Literal["auto", "device", "stream", "video", "folder"] = Field(
        default="auto", description="What `source` is; auto guesses from its form."
    )
    width: int = Field(
        default=1280,
        ge=160,
        le=7680,
        description="Capture width asked of a camera device, pixels; streams, videos and image "
        "folders keep their own size.",
    )
    height: int = Field(
        default=720,
        ge=120,
        le=4320,
        description="Capture height asked of a camera device, pixels; streams, videos and image "
        "folders keep their own size.",
    )
    fps_cap: float = Field(
        default=15,
        gt=0,
        le=240,
        description="Frames per second taken at most from a live source (camera device or "
        "stream); videos and image folders are read at the pipeline's pace, every frame.",
    )
    reconnect_max_backoff_s: float = Field(
        default=30, gt=0, le=3600, description="Longest wait between reconnect attempts."
    )
    loop: bool = Field(
        default=False,
        description="Video files only: play the file at its own frame rate and from its start "
        "again at each end, as a live camera (fps_cap applies, the agent runs until stopped); "
        "for demos and soak runs.",
    )

    @model_validator(mode="after")
    def _source_matches_kind(self) -> Self:
        if self.kind == "device" and not self.source.isdigit():
            raise ValueError(f"source {self.source!r} must be a camera index for kind 'device'")
        if self.kind == "stream" and urlsplit(self.source).scheme not in {"rtsp", "http", "https"}:
            raise ValueError(f"source {self.source!r} must be an rtsp/http(s) URL for 'stream'")
        if self.loop and self.kind in {"device", "stream", "folder"}:
            raise ValueError(f"loop replays video files; a {self.kind!r} source cannot loop")
        return self


class ReadingConfig(StrictConfigModel):
    """Classification, OCR and tracking of detected signs."""

    ocr_backend: Literal["tesserocr", "pytesseract"] = Field(
        default="tesserocr",
        description="OCR engine: tesserocr in-process (fast) or pytesseract (spawns tesseract).",
    )
    ocr_languages: list[str] = Field(
        default_factory=lambda: ["eng"],
        min_length=1,
        description="Tesseract language packs for text signs (e.g. eng, deu).",
    )
    speed_unit: Literal["km/h", "mph"] = Field(
        default="km/h", description="Unit of round speed-limit signs in the region."
    )
    confirm_frames: int = Field(
        default=3, ge=1, le=100, description="Frames a track needs before its reading is sent."
    )
    min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Readings below this confidence are not sent."
    )
    min_report_px: int = Field(
        default=28,
        ge=0,
        le=1000,
        description="A sign is reported while still in view only from a view at least this "
        "many pixels tall (smaller far views are often misread); a sign never seen this large "
        "is reported when it leaves the view.",
    )

    @field_validator("ocr_languages")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        bad = [code for code in value if _LANGUAGE_RE.fullmatch(code) is None]
        if bad:
            raise ValueError(f"not Tesseract language codes: {bad} (expected e.g. eng, deu)")
        return value


class ReportingConfig(StrictConfigModel):
    """What the device sends, where and how often."""

    sink: Literal["mqtt", "stdout", "file"] = Field(
        default="mqtt",
        description="mqtt: through the outbox to the broker; stdout or file: JSON lines, no "
        "broker needed.",
    )
    output_file: Path | None = Field(
        default=None, description="JSON-lines file for the file sink (appended to)."
    )
    health_interval_s: float = Field(
        default=30, ge=1, le=3600, description="Seconds between health reports."
    )
    include_crops: bool = Field(default=False, description="Attach a small JPEG of each sign.")
    crop_max_px: int = Field(
        default=96, ge=16, le=256, description="Longest side of attached crops, pixels."
    )

    @model_validator(mode="after")
    def _file_sink_has_a_file(self) -> Self:
        if self.sink == "file" and self.output_file is None:
            raise ValueError("the file sink needs output_file")
        return self


class OutboxConfig(StrictConfigModel):
    """The on-disk store-and-forward queue every message passes through."""

    path: Path = Field(
        default=Path("/var/lib/roadsign/outbox.sqlite3"), description="SQLite outbox file."
    )
    max_messages: int = Field(
        default=100_000, ge=100, description="Messages kept at most; the oldest go first."
    )
    max_mb: float = Field(
        default=256, gt=0, le=65536, description="Outbox size limit, MiB; the oldest go first."
    )


class TlsConfig(StrictConfigModel):
    """TLS files for the broker connection."""

    ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the broker's certificate."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client certificate's private key.")

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file come together")
        return self

    @property
    def configured(self) -> bool:
        """Whether any TLS file is set."""
        return any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))


class BrokerConfig(StrictConfigModel):
    """The MQTT v5 broker connection."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt:// or mqtts:// (TCP), ws:// or wss:// (WebSocket).",
    )
    username: str | None = Field(
        default=None, description="User name; unset uses the device id, as enrolment issues."
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the broker password; never the password itself in a profile.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS files.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive, seconds.")

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in BROKER_SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(BROKER_SCHEMES)}, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no host in broker URL {value!r}")
        try:
            _ = parts.port
        except ValueError as e:
            raise ValueError(f"bad port in broker URL {value!r}") from e
        return value

    @model_validator(mode="after")
    def _tls_needs_secure_scheme(self) -> Self:
        if self.tls.configured and urlsplit(self.url).scheme in {"mqtt", "ws"}:
            raise ValueError(
                f"TLS files are set but {self.url!r} is plaintext; use mqtts:// or wss://"
            )
        return self


class FixedLocation(StrictConfigModel):
    """Where a roadside unit stands."""

    lat: float = Field(default=0, ge=-90, le=90, description="Latitude, degrees (WGS84).")
    lon: float = Field(default=0, ge=-180, le=180, description="Longitude, degrees (WGS84).")


class LocalApiConfig(StrictConfigModel):
    """The device's small HTTP API: where it listens, who may call it, and what it accepts."""

    enabled: bool = Field(default=True, description="Serve /health, /metrics and /predict.")
    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on. Anything beyond loopback (127.0.0.0/8, ::1, "
        "localhost), including 0.0.0.0, needs token_file.",
    )
    port: int = Field(
        default=8088, ge=0, le=65535, description="Port to listen on; 0 takes any free port."
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token every data route then requires "
        "(Authorization: Bearer <token>, at least 16 characters); never the token itself in a "
        "profile. Required when host is beyond loopback; may be set for loopback too.",
    )
    max_upload_mb: float = Field(
        default=10,
        gt=0,
        le=200,
        description="Largest accepted image file, MiB: a /predict body or one /predict/batch part.",
    )
    max_batch_mb: float = Field(
        default=64,
        gt=0,
        le=1024,
        description="Largest accepted /predict/batch body, MiB. Its files are read and decoded "
        "one at a time, so this bounds the time a batch takes, not its memory.",
    )
    max_image_pixels: int = Field(
        default=7680 * 4320,
        ge=1,
        le=2**30,
        description="Largest image accepted, width x height as its header declares, checked "
        "before decoding (bigger ones get 413). Default: 7680x4320, the largest camera frame "
        "a profile may set.",
    )
    header_timeout_s: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Seconds a client may take to send a request's line and headers, from when "
        "it connects; a slower one is disconnected. Until its headers are in, a connection "
        "holds no worker, and once they are in, a request without the token is answered 401 at "
        "once: a client that does not hold the token cannot keep others from the workers.",
    )
    timeout_s: float = Field(
        default=30,
        gt=0,
        le=600,
        description="Seconds a client may spend sending a request's body, counted from when its "
        "headers are in (time the agent spends reading images is not counted); a slower or "
        "stalled client is disconnected, so it cannot hold a worker.",
    )
    max_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Requests served at once, counted from when their headers are in; one "
        "beyond them is answered 503 with Retry-After at once rather than queued.",
    )

    @field_validator("token_file")
    @classmethod
    def _token_beyond_loopback(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        host, enabled = info.data.get("host"), info.data.get("enabled")
        if value is None and enabled and isinstance(host, str) and not is_loopback_host(host):
            raise ValueError(
                f"required: the API listens on {host!r}, beyond loopback, and every listener "
                "beyond loopback authenticates; name a file holding its bearer token"
            )
        return value


class DeviceProfile(StrictConfigModel):
    """A device profile: everything one class of device runs with."""

    profile: str = Field(
        default="custom", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="Profile name."
    )
    description: str = Field(default="", max_length=500, description="What the profile is for.")
    mounting: Literal["bench", "vehicle", "roadside"] = Field(
        default="bench",
        description="Where the camera is: bench (development), vehicle, roadside (which needs a "
        "fixed location).",
    )
    identity: IdentityConfig = Field(default_factory=IdentityConfig, description="Identity.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Detector.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Frame source.")
    reading: ReadingConfig = Field(default_factory=ReadingConfig, description="OCR, tracking.")
    reporting: ReportingConfig = Field(
        default_factory=ReportingConfig, description="Reporting intervals."
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Outbox.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker.")
    location: FixedLocation | None = Field(
        default=None,
        description="Fixed position, sent with every reading; required for roadside units.",
    )
    api: LocalApiConfig = Field(default_factory=LocalApiConfig, description="Local HTTP API.")
    ota: OtaConfig = Field(default_factory=OtaConfig, description="Signed model updates.")

    @model_validator(mode="after")
    def _roadside_has_location(self) -> Self:
        if self.mounting == "roadside" and self.location is None:
            raise ValueError("a roadside profile needs a fixed location (location.lat/lon)")
        return self

    @model_validator(mode="after")
    def _password_never_in_clear(self) -> Self:
        # The repository is read with the broker password: over plain HTTP anyone on the path
        # would learn the credential that also lets them publish as this device.
        url = urlsplit(self.ota.repository_url)
        if (
            self.ota.enabled
            and self.broker.password_file is not None
            and url.scheme == "http"
            and not is_loopback_host(url.hostname or "")
        ):
            raise ValueError(
                f"ota.repository_url {self.ota.repository_url!r} is plaintext http:// to another "
                "host, and the device reads it with its broker password: use https://"
            )
        return self


def read_profile(path: Path | None, env: Mapping[str, str]) -> DeviceProfile:
    """The profile at `path` with `env`'s ``ROADSIGN_AGENT__`` overrides, as ``run`` reads it;
    None: a default profile (for the commands whose profile is optional)."""
    if path is None:
        return DeviceProfile()
    return load_config(DeviceProfile, path, env=env, env_prefix=ENV_PREFIX)
