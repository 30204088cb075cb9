"""The broker's configuration, generated: ``mosquitto.conf`` plus the chosen backend's state.

One source for deployments, the demo and the tests (``roadsign-fleet broker-config``): no
anonymous clients, a maximum packet size the protocol's largest message fits in, persistence
for the ingest workers' sessions, one listener (TLS where given a certificate; production mode
refuses a plaintext one), and the accounts of the committed fleet, so a broker whose state was
lost is rebuilt from the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fleet_server.credentials import mosquitto_hash
from fleet_server.exceptions import BrokerAuthError
from fleet_server.services.broker_auth import dynsec_plan
from fleet_server.services.broker_auth.accounts import Account
from fleet_server.services.broker_auth.files import write_private
from fleet_server.services.broker_auth.password_file import PasswordFileAuth
from fleet_server.settings import ServerSettings

AUTOSAVE_INTERVAL_S = 60
"""How often Mosquitto saves sessions and queued messages; at most this much is lost in a crash."""
DYNSEC_FILE = "dynamic-security.json"
DYNSEC_PLUGIN_CANDIDATES = (
    Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"),  # Debian, Ubuntu
    Path("/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so"),
    Path("/usr/lib/mosquitto_dynamic_security.so"),  # the eclipse-mosquitto image
    Path("/usr/local/lib/mosquitto_dynamic_security.so"),
)


def find_dynsec_plugin() -> Path:
    """The dynamic-security plugin where this machine's Mosquitto package put it."""
    for candidate in DYNSEC_PLUGIN_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise BrokerAuthError(
        "no mosquitto_dynamic_security.so in "
        + ", ".join(str(c.parent) for c in DYNSEC_PLUGIN_CANDIDATES)
        + "; name it with --dynsec-plugin"
    )


@dataclass(frozen=True, slots=True)
class Listener:
    """Where the broker listens; with a certificate and its key (absolute paths), TLS only."""

    host: str
    port: int
    certfile: Path | None = None
    keyfile: Path | None = None

    def config_lines(self) -> list[str]:
        """The listener's lines of ``mosquitto.conf``."""
        lines = [f"listener {self.port} {self.host}"]
        if self.certfile is not None and self.keyfile is not None:
            lines += [f"certfile {self.certfile}", f"keyfile {self.keyfile}"]
        return lines


def check_listener(settings: ServerSettings, listener: Listener) -> None:
    """Refuse a listener the broker could not open, or a plaintext one in production mode."""
    if (listener.certfile is None) != (listener.keyfile is None):
        raise BrokerAuthError("--certfile and --keyfile come together (a TLS listener needs both)")
    for option, path in (("--certfile", listener.certfile), ("--keyfile", listener.keyfile)):
        if path is not None and not path.is_file():
            raise BrokerAuthError(f"{option} {path}: no such file")
    if settings.mode == "production" and listener.certfile is None:
        raise BrokerAuthError(
            "production mode refused: the broker would listen in plaintext MQTT, carrying the "
            "devices' passwords and readings unencrypted; pass --certfile and --keyfile (TLS)"
        )


def mosquitto_conf(
    settings: ServerSettings,
    *,
    listener: Listener,
    out_dir: Path,
    run_as: str | None = None,
    dynsec_plugin: Path | None = None,
) -> str:
    """``mosquitto.conf`` for `settings.enrolment.broker_auth`, pure (`check_listener` first)."""
    enrolment = settings.enrolment
    lines = [
        "# Written by `roadsign-fleet broker-config`: regenerate it rather than edit it.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"max_packet_size {settings.ingest.max_packet_bytes}",
        "persistence true",  # ingest sessions and their queued QoS 1 messages survive restarts
        f"persistence_location {out_dir}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        "log_dest stderr",
        *listener.config_lines(),
    ]
    if enrolment.broker_auth == "dynamic_security":
        if dynsec_plugin is None:
            raise BrokerAuthError("the dynamic_security backend needs the plugin's path")
        lines += [f"plugin {dynsec_plugin}", f"plugin_opt_config_file {out_dir / DYNSEC_FILE}"]
    elif enrolment.broker_auth == "password_file":
        lines += [
            f"password_file {enrolment.password_file}",
            f"acl_file {enrolment.acl_file}",
            f"pid_file {enrolment.mosquitto_pid_file}",
        ]
    else:
        raise BrokerAuthError(
            "enrolment.broker_auth is none: the server manages no broker accounts, so there is "
            "no broker configuration to generate; choose dynamic_security"
        )
    if run_as:
        lines.append(f"user {run_as}")  # a broker started as root drops to this user
    return "\n".join(lines) + "\n"


def write_broker_config(
    settings: ServerSettings,
    accounts: dict[str, Account],
    *,
    listener: Listener,
    out_dir: Path,
    run_as: str | None = None,
    dynsec_plugin: Path | None = None,
    force: bool = False,
) -> list[Path]:
    """Write the configuration and the backend's accounts; the files written."""
    check_listener(settings, listener)
    if settings.enrolment.broker_auth == "dynamic_security" and dynsec_plugin is None:
        dynsec_plugin = find_dynsec_plugin()
    conf = mosquitto_conf(
        settings, listener=listener, out_dir=out_dir, run_as=run_as, dynsec_plugin=dynsec_plugin
    )
    written = [out_dir / "mosquitto.conf"]
    if settings.enrolment.broker_auth == "dynamic_security":
        state = out_dir / DYNSEC_FILE
        if state.exists() and not force:
            raise BrokerAuthError(
                f"{state} exists and holds the broker's live accounts; stop the broker and "
                "pass --force to rebuild it from the database"
            )
        admin = settings.enrolment
        document = dynsec_plan.document(
            accounts,
            admin_user=admin.broker_admin_username,
            admin_hash=mosquitto_hash(admin.broker_admin_password.get_secret_value()),
        )
        write_private(state, json.dumps(document, indent=1) + "\n")
        written.append(state)
    else:
        backend = PasswordFileAuth.from_settings(settings)
        backend.write(accounts)
        written += [backend.passwords, backend.acl]
    write_private(out_dir / "mosquitto.conf", conf)
    return written
