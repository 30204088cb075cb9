"""The fleet server's settings: one object per process, from a YAML file plus environment.

``roadsign-fleet`` builds it in ``main()`` with `fleet_protocol.config_files.load_config`
(``ROADSIGN_FLEET__SECTION__FIELD`` variables override the file) and passes it down. Development
mode runs on built-in throwaway secrets and SQLite; production mode refuses to start while any
secret still has its development default or is short or low in entropy, on SQLite, or with a
plaintext ``mqtt://`` broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from fleet_protocol.config_files import StrictConfigModel
from fleet_protocol.exceptions import TopicError
from fleet_protocol.topics import DEFAULT_SHARE_GROUP, server_subscriptions, validate_device_id
from fleet_server.exceptions import MqttSetupError
from fleet_server.mqtt import broker_address
from fleet_server.security import origin_of, weak_secret_problem

ENV_PREFIX = "ROADSIGN_FLEET__"

PUBLISH_OVERHEAD_BYTES = 1024
"""Room beside a payload for the rest of an MQTT PUBLISH (see `IngestSettings.max_packet_bytes`)."""

# Development defaults: anyone can read them here, which is why production refuses them.
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105
DEV_BROKER_PASSWORD = "dev-only-broker-password"  # noqa: S105
DEV_ADMIN_TOKEN = "dev-only-admin-token"  # noqa: S105
SECRET_RECIPE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - a command
DEV_BROKER_ADMIN_PASSWORD = "dev-only-broker-admin-password"  # noqa: S105
DEV_TUF_ONLINE_KEY_PASSPHRASE = "dev-only-tuf-online-key-passphrase"  # noqa: S105


def checked_mqtt_url(value: str) -> str:
    """`value` if it is an mqtt:// or mqtts:// URL with a host and a valid port, else raise."""
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("broker url must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"no host in broker url {value!r}")
    try:
        broker_address(value)  # the very parsing every server-side client connects with
    except MqttSetupError as e:
        raise ValueError(str(e)) from e
    return value


class HttpSettings(StrictConfigModel):
    """Where the API and dashboard listen."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    max_live_streams: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most live-feed streams (/api/v1/readings/stream, the dashboard's live "
        "page) one API process serves at once; beyond, it answers 503. They share one "
        "database connection; each costs a little memory and a token check a second.",
    )


class DatabaseSettings(StrictConfigModel):
    """The relational store."""

    url: str = Field(
        default="sqlite:///.cache/fleet/fleet.sqlite3",
        description="SQLAlchemy URL: postgresql+psycopg://... in production, SQLite for demos.",
    )

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if not value.startswith(("postgresql+psycopg://", "postgresql://", "sqlite://")):
            raise ValueError(
                "database url must start with postgresql+psycopg://, postgresql:// or sqlite://"
            )
        return value


class BrokerSettings(StrictConfigModel):
    """The MQTT v5 broker the ingestion workers read from."""

    url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt:// or mqtts:// URL.")
    username: str = Field(default="fleet-server", description="The server's broker user.")
    password: SecretStr = Field(
        default=SecretStr(DEV_BROKER_PASSWORD), description="The server's broker password."
    )
    share_group: str = Field(
        default=DEFAULT_SHARE_GROUP,
        description="MQTT v5 shared-subscription group; replicas in one group split the load.",
    )
    ca_file: Path | None = Field(default=None, description="CA bundle for mqtts:// brokers.")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        return checked_mqtt_url(value)

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, value: str) -> str:
        try:
            server_subscriptions(value)
        except TopicError as e:
            raise ValueError(str(e)) from e
        return value


class IngestSettings(StrictConfigModel):
    """How the ingestion worker batches and keeps its broker session."""

    batch_size: int = Field(default=500, ge=1, le=50_000, description="Messages per transaction.")
    batch_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="Longest wait to fill a batch, seconds."
    )
    session_expiry_s: int = Field(
        default=3600, ge=0, description="Broker keeps unacknowledged messages this long."
    )
    max_payload_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Larger messages are rejected unparsed; the worker also asks the broker "
        "(MQTT v5 maximum packet size) never to deliver a packet much larger.",
    )

    @property
    def max_packet_bytes(self) -> int:
        """The largest MQTT packet the fleet takes: the broker's limit and the worker's.

        One number for both, so nothing the broker accepts is then silently withheld from the
        worker: the largest payload plus what a PUBLISH adds to it (fixed header, the topic,
        about 100 bytes for the longest device topic, packet id, the properties a device may set).
        """
        return self.max_payload_bytes + PUBLISH_OVERHEAD_BYTES

    known_devices_ttl_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Longest time the worker trusts its list of enrolled and decommissioned "
        "devices before reading it again, seconds: a decommissioned device's messages are "
        "rejected at most this long after the decommissioning.",
    )
    metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="Prometheus /metrics of the worker; 0: none."
    )
    stop_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="Longest a stopping worker (SIGTERM) takes to leave its share group, store "
        "what the broker already sent it and disconnect, seconds; keep it under the "
        "orchestrator's grace period (Kubernetes: 30 s). What is not stored by then stays "
        "unacknowledged and is delivered again to the next worker under the same client id.",
    )


BrokerAuthBackend = Literal["none", "password_file", "dynamic_security"]
"""How the server keeps the broker's accounts (`fleet_server.services.broker_auth` has them)."""


class EnrolmentSettings(StrictConfigModel):
    """What enrolment hands a device, and how the server keeps the broker's accounts."""

    broker_public_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="Broker URL as devices reach it."
    )

    @field_validator("broker_public_url")
    @classmethod
    def _public_mqtt_url(cls, value: str) -> str:
        return checked_mqtt_url(value)

    ca_file: Path | None = Field(default=None, description="CA certificate given to devices.")
    broker_auth: BrokerAuthBackend = Field(
        default="none",
        description="none: the server does not manage broker accounts (devices get no password); "
        "dynamic_security: it manages Mosquitto's dynamic-security plugin over MQTT (isolates "
        "devices; works in a pod); password_file: it writes Mosquitto's password and ACL files "
        "and SIGHUPs the broker (development only: the ACL file cannot refuse a SUBSCRIBE).",
    )
    password_file: Path | None = Field(
        default=None, description="password_file backend: the Mosquitto password file written."
    )
    acl_file: Path | None = Field(
        default=None, description="password_file backend: the Mosquitto ACL file written."
    )
    mosquitto_pid_file: Path | None = Field(
        default=None, description="password_file backend: pid file of the Mosquitto to SIGHUP."
    )
    broker_admin_username: str = Field(
        default="fleet-broker-admin",
        description="dynamic_security backend: the broker user allowed to manage accounts.",
    )
    broker_admin_password: SecretStr = Field(
        default=SecretStr(DEV_BROKER_ADMIN_PASSWORD),
        description="dynamic_security backend: that user's password.",
    )
    broker_admin_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest wait for the broker's admin API, seconds."
    )

    @field_validator("broker_admin_username")
    @classmethod
    def _one_broker_user(cls, value: str) -> str:
        try:
            validate_device_id(value)  # same rules: one user name, one topic level
        except TopicError as e:
            raise ValueError(str(e).replace("device id", "user name")) from e
        return value

    @model_validator(mode="after")
    def _backend_has_its_files(self) -> Self:
        files = {
            "password_file": self.password_file,
            "acl_file": self.acl_file,
            "mosquitto_pid_file": self.mosquitto_pid_file,
        }
        if self.broker_auth == "password_file":
            missing = [name for name, path in files.items() if path is None]
            if missing:
                raise ValueError(f"broker_auth password_file needs {', '.join(missing)}")
        else:
            stray = [name for name, path in files.items() if path is not None]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} only apply to broker_auth password_file, "
                    f"not {self.broker_auth}"
                )
        return self


class RepositorySettings(StrictConfigModel):
    """The TUF repository of signed model versions: its online key, lifetimes and bins."""

    online_key_file: Path | None = Field(
        default=None,
        description="Encrypted PEM of the online key (snapshot, timestamp, director, bins), "
        "written by `roadsign-fleet keys init`; unset: this process signs nothing, and the "
        "repository's timestamp is not kept fresh by it.",
    )
    online_key_passphrase: SecretStr = Field(
        default=SecretStr(DEV_TUF_ONLINE_KEY_PASSPHRASE),
        description="Passphrase of the online key file; production refuses the default.",
    )
    root_expiry_days: int = Field(
        default=365, ge=1, le=3650, description="Lifetime of a root version, days."
    )
    targets_expiry_days: int = Field(
        default=365, ge=1, le=3650, description="Lifetime of a targets version (offline), days."
    )
    director_expiry_days: int = Field(
        default=30, ge=1, le=365, description="Lifetime of director and bin versions, days."
    )
    snapshot_expiry_days: int = Field(
        default=7, ge=1, le=365, description="Lifetime of a snapshot version, days."
    )
    timestamp_expiry_s: int = Field(
        default=86400,
        ge=300,
        le=30 * 86400,
        description="Lifetime of a timestamp, seconds; re-signed when a third of it is left.",
    )
    bin_bit_length: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Director hash bins: 2**bits bins; set when the repository is initialised.",
    )
    refresh_interval_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="How often an API process checks whether online metadata is due for "
        "re-signing, seconds (must be well under a third of the timestamp's lifetime).",
    )
    max_bundle_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        le=2 * 1024 * 1024 * 1024,
        description="Largest model bundle (its files together) `models publish` accepts.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow server `models publish --from-mlflow` resolves aliases with.",
    )
    device_auth: Literal["broker_password", "none"] = Field(
        default="broker_password",
        description="Who may read /tuf/metadata and /tuf/targets. broker_password: an enrolled, "
        "not decommissioned device with its broker user and password (HTTP Basic), each device "
        "only its own director bin, plus API tokens; none: anyone (a lab; production refuses "
        "it). With enrolment.broker_auth none devices hold no password, so only tokens can read.",
    )
    device_auth_cache_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="How long a device's verified password is remembered, seconds (PBKDF2 is "
        "slow on purpose); a changed password or a decommissioning takes effect at once. "
        "0 checks every request.",
    )

    @model_validator(mode="after")
    def _refresh_in_time(self) -> Self:
        if self.refresh_interval_s >= self.timestamp_expiry_s / 3:
            raise ValueError(
                "refresh_interval_s must be under a third of timestamp_expiry_s, or the "
                "timestamp can expire between two checks"
            )
        return self


class TelemetrySettings(StrictConfigModel):
    """Where traces go and how much is logged."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces; "
        "unset: traces are not exported.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged (JSON lines on stderr)."
    )


class AuthSettings(StrictConfigModel):
    """Secrets of the API and dashboard, and how long a dashboard login lasts."""

    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY),
        description="Key that signs dashboard session cookies and derives their CSRF tokens; "
        "changing it ends every dashboard session.",
    )
    bootstrap_admin_token: SecretStr = Field(
        default=SecretStr(DEV_ADMIN_TOKEN),
        description="Admin API token stored (hashed) at start-up; configuring a new one "
        "revokes the previous one.",
    )
    session_ttl_s: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * 86400,
        description="A dashboard login lasts this many seconds (and never beyond its token).",
    )
    public_origin: str | None = Field(
        default=None,
        description="The dashboard's origin as browsers see it, e.g. https://fleet.example.com, "
        "behind a TLS-terminating proxy: state-changing requests must come from it and an "
        "https origin makes the session cookie Secure. Unset: each request's own scheme and "
        "Host.",
    )

    @field_validator("public_origin")
    @classmethod
    def _an_origin(cls, value: str | None) -> str | None:
        if value is not None and origin_of(value) != value.rstrip("/"):
            raise ValueError("must be scheme://host[:port], e.g. https://fleet.example.com")
        return value if value is None else value.rstrip("/")


class RolloutSettings(StrictConfigModel):
    """The staged-rollout driver that runs inside ``serve``."""

    enabled: bool = Field(
        default=False,
        description="Run the rollout driver in this serve process: every tick_s it steps the "
        "running and paused rollouts and carries out their assignments and nudges (one "
        "replica at a time drives; the others find the lock taken). Signing needs "
        "tuf.online_key_file.",
    )
    tick_s: float = Field(
        default=30, gt=0, le=3600, description="Seconds between two ticks of the driver."
    )
    window_s: float = Field(
        default=6 * 3600,
        gt=0,
        le=30 * 86400,
        description="Length of the evidence windows a device's health and readings are judged "
        "over: this long before its assignment, and from the moment the new model took over (its "
        "first active report) for at most this long.",
    )
    max_health_gap_s: float = Field(
        default=300,
        gt=0,
        description="Longest gap between two health samples still counted as driving time "
        "(when the first says camera_state ok); a longer gap means the device was off.",
    )
    nudge_client_id: str = Field(
        default="fleet-rollouts",
        min_length=1,
        max_length=64,
        description="MQTT client id prefix of the driver's nudge publisher (the host name is "
        "appended).",
    )


class ServerSettings(StrictConfigModel):
    """All settings of a fleet-server process."""

    mode: Literal["development", "production"] = Field(
        default="development",
        description="production refuses weak or development secrets, SQLite and plaintext MQTT.",
    )
    http: HttpSettings = Field(default_factory=HttpSettings, description="HTTP listener.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Database.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="MQTT broker.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API secrets.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Ingestion.")
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings, description="Logs and traces."
    )
    enrolment: EnrolmentSettings = Field(
        default_factory=EnrolmentSettings, description="Device enrolment."
    )
    tuf: RepositorySettings = Field(
        default_factory=RepositorySettings, description="TUF repository of model versions."
    )
    rollouts: RolloutSettings = Field(
        default_factory=RolloutSettings, description="Staged rollout driver."
    )

    @model_validator(mode="after")
    def _production_has_real_secrets(self) -> Self:
        if self.mode != "production":
            return self
        problems = [
            f"{name} still has its development default" for name in development_secrets_in_use(self)
        ]
        if self.database.url.startswith("sqlite"):
            problems.append("database.url is SQLite; production runs on PostgreSQL")
        weak = weak_secrets(self)
        problems += weak + plaintext_mqtt(self)
        if self.tuf.device_auth == "none":
            problems.append(
                "tuf.device_auth is none: anyone could list the fleet's devices and download "
                "its models; use broker_password"
            )
        if problems:
            hint = f" (make a strong secret with: {SECRET_RECIPE})" if weak else ""
            raise ValueError("production mode refused: " + "; ".join(problems) + hint)
        return self

    @model_validator(mode="after")
    def _rollouts_can_sign(self) -> Self:
        if self.rollouts.enabled and self.tuf.online_key_file is None:
            raise ValueError(
                "rollouts.enabled needs tuf.online_key_file: the driver signs assignments"
            )
        return self

    @model_validator(mode="after")
    def _broker_accounts_hold(self) -> Self:
        if self.enrolment.broker_auth == "dynamic_security" and (
            self.enrolment.broker_admin_username == self.broker.username
        ):
            raise ValueError(
                "enrolment.broker_admin_username must differ from broker.username: ingest "
                "replicas must not hold the right to change the broker's accounts"
            )
        if self.mode == "production" and self.enrolment.broker_auth == "password_file":
            raise ValueError(
                "production mode refused: enrolment.broker_auth password_file cannot isolate "
                "devices (Mosquitto's ACL file lets any device subscribe to the server's shared "
                "group and swallow its share of other devices' messages); use dynamic_security"
            )
        return self


def development_secrets_in_use(settings: ServerSettings) -> list[str]:
    """Dotted names of the secrets that still hold their public development value."""
    secrets = {
        "broker.password": (settings.broker.password, DEV_BROKER_PASSWORD),
        "auth.secret_key": (settings.auth.secret_key, DEV_SECRET_KEY),
        "auth.bootstrap_admin_token": (settings.auth.bootstrap_admin_token, DEV_ADMIN_TOKEN),
    }
    if settings.enrolment.broker_auth == "dynamic_security":  # the only backend that uses it
        secrets["enrolment.broker_admin_password"] = (
            settings.enrolment.broker_admin_password,
            DEV_BROKER_ADMIN_PASSWORD,
        )
    if settings.tuf.online_key_file is not None:  # only a signing server needs it
        secrets["tuf.online_key_passphrase"] = (
            settings.tuf.online_key_passphrase,
            DEV_TUF_ONLINE_KEY_PASSPHRASE,
        )
    return [name for name, (value, dev) in secrets.items() if value.get_secret_value() == dev]


def weak_secrets(settings: ServerSettings) -> list[str]:
    """What is wrong with each secret too weak for production (development defaults aside)."""
    secrets = {
        "broker.password": settings.broker.password,
        "auth.secret_key": settings.auth.secret_key,
        "auth.bootstrap_admin_token": settings.auth.bootstrap_admin_token,
    }
    if settings.enrolment.broker_auth == "dynamic_security":  # the only backend that uses it
        secrets["enrolment.broker_admin_password"] = settings.enrolment.broker_admin_password
    if settings.tuf.online_key_file is not None:
        secrets["tuf.online_key_passphrase"] = settings.tuf.online_key_passphrase
    dev = set(development_secrets_in_use(settings))  # already reported as such
    found = []
    for name, value in secrets.items():
        problem = weak_secret_problem(value.get_secret_value())
        if problem is not None and name not in dev:
            found.append(f"{name} {problem}")
    return found


def plaintext_mqtt(settings: ServerSettings) -> list[str]:
    """The broker URLs that would carry passwords and readings unencrypted."""
    urls = {
        "broker.url": settings.broker.url,
        "enrolment.broker_public_url": settings.enrolment.broker_public_url,
    }
    return [
        f"{name} is plaintext mqtt://; production needs mqtts:// (TLS)"
        for name, url in urls.items()
        if not url.startswith("mqtts://")
    ]
