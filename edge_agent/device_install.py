"""An enrolment bundle turned into a device's installed files (``roadsign-agent install-bundle``).

The fleet server answers an enrolment (``POST /api/v1/devices``) with a bundle: the device's id,
its broker user and password (shown once), the broker's URL and CA, and the TUF repository's root.
An operator saves that answer to a file, and `deploy/device/install.sh` runs this command on it,
which writes:

- /etc/roadsign/profile.yaml (0644): the base profile with the bundle's identity and broker, and
  no secret;
- /etc/roadsign/broker-password (0600): the broker password, which the unit hands to the agent as
  a systemd credential;
- /etc/roadsign/tls/ca.pem (0644): the CA that signs the broker, where the bundle has one;
- /var/lib/roadsign/tuf-root.json (0644): the trusted TUF root, where the bundle has one.

Everything is checked before anything is written: the bundle's fields (a missing one is named), and
the resulting profile against the real schema. Each file is written whole (a temporary file
renamed), with its mode set before it holds a byte. ``root`` prefixes every path, so the layout can
be made in a folder (tests, image builds) while the profile names the device's real paths.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.exceptions import InstallError
from edge_agent.profile import DeviceProfile
from fleet_protocol.config_files import load_config
from fleet_protocol.exceptions import ConfigFileError

CONFIG_DIR = PurePosixPath("/etc/roadsign")
STATE_DIR = PurePosixPath("/var/lib/roadsign")
PROFILE = CONFIG_DIR / "profile.yaml"
PASSWORD = CONFIG_DIR / "broker-password"
CA_FILE = CONFIG_DIR / "tls" / "ca.pem"
TUF_ROOT = STATE_DIR / "tuf-root.json"
OUTBOX = STATE_DIR / "outbox.sqlite3"
OTA_STATE = STATE_DIR / "ota"


class _Bundle(BaseModel):
    # Not a config file: the server's answer, which may grow fields this agent does not know
    # yet. Unknown fields are ignored; missing ones are refused by name.
    model_config = ConfigDict(extra="ignore")


class BundleDevice(_Bundle):
    """The registry entry inside a bundle."""

    device_id: str = Field(description="The enrolled device id.")
    profile: str | None = Field(default=None, description="The profile name it was enrolled with.")


class EnrolmentBundle(_Bundle):
    """What ``POST /api/v1/devices`` answers (fleet_server's ``DeviceBundle``), as read here."""

    device: BundleDevice = Field(description="The registry entry.")
    username: str = Field(description="Broker user name.")
    password: str | None = Field(description="Broker password; null where the broker is open.")
    broker_url: str = Field(description="Broker URL the device connects to.")
    ca_certificate: str | None = Field(description="PEM of the CA that signs the broker.")
    tuf_root: dict[str, Any] | None = Field(
        description="The TUF root metadata; null while the repository is not initialised."
    )


@dataclass(frozen=True)
class PlannedFile:
    """One file the install writes: its path on the device, mode and bytes."""

    path: PurePosixPath
    mode: int
    content: bytes


def read_bundle(path: Path) -> EnrolmentBundle:
    """The bundle in `path`; `InstallError` naming every missing or malformed field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InstallError(f"cannot read the enrolment bundle {path}: {e}") from e
    try:
        return EnrolmentBundle.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
            for item in e.errors(include_url=False)
        )
        raise InstallError(f"enrolment bundle {path}: {problems}") from e


def device_profile(
    bundle: EnrolmentBundle, base: dict[str, Any], *, fleet_url: str | None
) -> dict[str, Any]:
    """`base` (a profile's YAML data) with the bundle's identity, broker and the device paths.

    ``detector.model_dir`` is dropped: the agent starts on the bundle its package ships, and
    signed updates go to the OTA slots under /var/lib/roadsign/ota. `fleet_url` (the server's
    base URL) turns on signed updates, which needs the bundle's TUF root.
    """
    data = copy.deepcopy(base)
    data["identity"] = {**data.get("identity", {}), "device_id": bundle.device.device_id}
    data.setdefault("detector", {}).pop("model_dir", None)
    broker = {**data.get("broker", {}), "url": bundle.broker_url, "username": bundle.username}
    broker["password_file"] = str(PASSWORD) if bundle.password is not None else None
    tls = dict(broker.get("tls", {}))
    tls["ca_file"] = str(CA_FILE) if bundle.ca_certificate is not None else None
    broker["tls"] = tls
    data["broker"] = broker
    data["outbox"] = {**data.get("outbox", {}), "path": str(OUTBOX)}
    data["reporting"] = {**data.get("reporting", {}), "sink": "mqtt"}
    if fleet_url is not None:
        if bundle.tuf_root is None:
            raise InstallError(
                "--fleet-url turns on signed updates, but the bundle's tuf_root is null (the "
                "repository was not initialised when the device was enrolled): enrol it again"
            )
        data["ota"] = {
            **data.get("ota", {}),
            "enabled": True,
            "repository_url": fleet_url,
            "trusted_root_file": str(TUF_ROOT),
            "state_dir": str(OTA_STATE),
        }
    try:
        DeviceProfile.model_validate(data)
    except ValidationError as e:
        raise InstallError(f"the installed profile would be invalid: {e}") from e
    return data


def planned_files(
    bundle: EnrolmentBundle, base_profile: Path, *, fleet_url: str | None
) -> list[PlannedFile]:
    """Every file the install writes, checked; nothing is written."""
    if bundle.password is None:
        # The unit hands the agent its password as a systemd credential, which must exist.
        raise InstallError(
            "the bundle's password is null: the fleet's broker is open (enrolment.broker_auth "
            "none), and an installed agent always authenticates; enrol it on a broker whose "
            "accounts the fleet server keeps"
        )
    try:
        load_config(DeviceProfile, base_profile)  # names a bad field of the base with its line
        base = yaml.safe_load(base_profile.read_text(encoding="utf-8")) or {}
    except (ConfigFileError, OSError, yaml.YAMLError) as e:
        raise InstallError(f"base profile: {e}") from e
    profile = device_profile(bundle, base, fleet_url=fleet_url)
    header = (
        f"# Written by roadsign-agent install-bundle for {bundle.device.device_id} from "
        f"{base_profile.name}; the broker password is in {PASSWORD}, never here.\n"
    )
    files = [
        PlannedFile(PROFILE, 0o644, (header + yaml.safe_dump(profile, sort_keys=False)).encode()),
        PlannedFile(PASSWORD, 0o600, bundle.password.encode()),
    ]
    if bundle.ca_certificate is not None:
        files.append(PlannedFile(CA_FILE, 0o644, bundle.ca_certificate.encode()))
    if bundle.tuf_root is not None:
        files.append(PlannedFile(TUF_ROOT, 0o644, json.dumps(bundle.tuf_root).encode()))
    return files


def on_root(root: Path, path: PurePosixPath) -> Path:
    """Where `path` (a device path) lies under `root`."""
    return root / path.relative_to("/")


def write_file(root: Path, planned: PlannedFile) -> Path:
    """Write one planned file whole under `root`, its mode set before any byte is in it."""
    target = on_root(root, planned.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, planned.mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), planned.mode)  # the umask may have narrowed the open's mode
            f.write(planned.content)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(target)
    except OSError as e:
        raise InstallError(f"cannot write {target}: {e}") from e
    return target


def install_bundle(
    bundle_file: Path,
    base_profile: Path,
    *,
    root: Path = Path("/"),
    fleet_url: str | None = None,
    dry_run: bool = False,
) -> list[PlannedFile]:
    """Check the bundle and profile, then (unless `dry_run`) write every file under `root`."""
    files = planned_files(read_bundle(bundle_file), base_profile, fleet_url=fleet_url)
    if not dry_run:
        for planned in files:
            write_file(root, planned)
    return files
