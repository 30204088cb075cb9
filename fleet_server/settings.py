"""The fleet server's settings: one object per process, from a YAML file plus environment.

``roadsign-fleet`` builds it in ``main()`` with `fleet_protocol.config_files.load_config`
(``ROADSIGN_FLEET__SECTION__FIELD`` variables override the file) and passes it down. Development
mode runs on built-in throwaway secrets and SQLite; production mode refuses to start while any
secret still has its development default, or on SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from fleet_protocol.config_files import StrictConfigModel
from fleet_protocol.exceptions import TopicError
from fleet_protocol.topics import DEFAULT_SHARE_GROUP, server_subscriptions, validate_device_id

ENV_PREFIX = "ROADSIGN_FLEET__"

# Development defaults: anyone can read them here, which is why production refuses them.
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105
DEV_BROKER_PASSWORD = "dev-only-broker-password"  # noqa: S105
DEV_ADMIN_TOKEN = "dev-only-admin-token"  # noqa: S105
DEV_BROKER_ADMIN_PASSWORD = "dev-only-broker-admin-password"  # noqa: S105


class HttpSettings(StrictConfigModel):
    """Where the API and dashboard listen."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")


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
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("broker url must start with mqtt:// or mqtts://")
        return value

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
        default=64 * 1024, ge=1024, description="Larger messages are rejected unparsed."
    )
    metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="Prometheus /metrics of the worker; 0: none."
    )


BrokerAuthBackend = Literal["none", "password_file", "dynamic_security"]
"""How the server keeps the broker's accounts (`fleet_server.services.broker_auth` has them)."""


class EnrolmentSettings(StrictConfigModel):
    """What enrolment hands a device, and how the server keeps the broker's accounts."""

    broker_public_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="Broker URL as devices reach it."
    )
    ca_file: Path | None = Field(default=None, description="CA certificate given to devices.")
    tuf_root_file: Path | None = Field(
        default=None, description="TUF root metadata given to devices."
    )
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
    """Secrets of the API and dashboard."""

    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY), description="Key that signs dashboard sessions."
    )
    bootstrap_admin_token: SecretStr = Field(
        default=SecretStr(DEV_ADMIN_TOKEN),
        description="Admin API token created on first start; stored hashed.",
    )


class ServerSettings(StrictConfigModel):
    """All settings of a fleet-server process."""

    mode: Literal["development", "production"] = Field(
        default="development", description="production refuses development secrets and SQLite."
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

    @model_validator(mode="after")
    def _production_has_real_secrets(self) -> Self:
        if self.mode != "production":
            return self
        problems = [
            f"{name} still has its development default" for name in development_secrets_in_use(self)
        ]
        if self.database.url.startswith("sqlite"):
            problems.append("database.url is SQLite; production runs on PostgreSQL")
        if problems:
            raise ValueError("production mode refused: " + "; ".join(problems))
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
    return [name for name, (value, dev) in secrets.items() if value.get_secret_value() == dev]
