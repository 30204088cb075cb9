"""The device install's parts that need no server: the systemd unit (checked by the real
``systemd-analyze verify``), the notify protocol the agent speaks to it, and what
``install-bundle`` makes of a bundle beyond the server's usual one (tests/fleet_server/
test_device_install.py installs a real one)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.device_install import (
    PASSWORD,
    EnrolmentBundle,
    PlannedFile,
    device_profile,
    install_bundle,
    write_file,
)
from edge_agent.exceptions import InstallError
from edge_agent.service_notify import ServiceNotifier
from tests.conftest import REPO_ROOT

UNIT = REPO_ROOT / "deploy" / "device" / "roadsign-agent.service"
AGENT = "/opt/roadsign/venv/bin/roadsign-agent"
BASE = REPO_ROOT / "firmware_configs" / "vehicle-rpi.yaml"


def unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text`, its ExecStart moved to an executable that exists
    here (verify refuses a missing one, and the test must not create /opt/roadsign)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is needed (Debian's systemd: tools/install-system-deps.sh)")
    assert AGENT in unit_text
    path = folder / "roadsign-agent.service"
    path.write_text(unit_text.replace(AGENT, shutil.which("true") or "/bin/true"))
    return subprocess.run(
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # an unknown key is only a warning


def test_verify_reports_a_misspelt_hardening_key(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = verify(text, tmp_path)
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


def test_the_unit_restarts_on_failure_feeds_a_watchdog_and_is_hardened() -> None:
    keys = unit_keys()
    expected = {
        "Type": ["notify"],
        "Restart": ["on-failure"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
        "User": ["roadsign"],
        "SupplementaryGroups": ["video"],
        "StateDirectory": ["roadsign"],
        "ReadWritePaths": ["/var/lib/roadsign"],
    }
    assert {key: keys.get(key) for key in expected} == expected
    assert int(keys["WatchdogSec"][0]) > 0
    assert keys["ExecStart"] == [f"{AGENT} run --config /etc/roadsign/profile.yaml"]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_the_agent_tells_systemd_ready_watchdog_and_stopping(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    now = [0.0]
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "10000000"}
    notifier = ServiceNotifier.from_environment(env)
    notifier._clock = lambda: now[0]
    notifier.ready()
    for t in (0.0, 1.0, 4.9, 5.0):  # pinged at most once per half of the 10 s period
        now[0] = t
        notifier.watchdog()
    notifier.stopping()
    received = [notify_socket.recv(64).decode() for _ in range(4)]
    assert received == ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "STOPPING=1"]


def test_outside_systemd_or_for_another_pid_the_notifier_sends_nothing() -> None:
    assert not ServiceNotifier.from_environment({}).enabled
    ServiceNotifier.from_environment({}).ready()  # no socket: nothing to fail on
    other = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert os.getpid() != 1
    assert ServiceNotifier.from_environment(other)._interval is None


def bundle(**changes: object) -> EnrolmentBundle:
    fields: dict[str, object] = {
        "device": {"device_id": "rsu-3", "profile": "vehicle-rpi", "status": "enrolled"},
        "username": "rsu-3",
        "password": None,
        "broker_url": "mqtts://mqtt.example:8883",
        "ca_certificate": None,
        "tuf_root": None,
        "a_field_a_later_server_adds": 1,
    }
    return EnrolmentBundle.model_validate({**fields, **changes})


def test_an_open_broker_and_no_repository_give_no_secret_and_no_updates() -> None:
    profile = device_profile(bundle(), {"broker": {"tls": {"ca_file": "/x"}}}, fleet_url=None)
    assert profile["broker"]["password_file"] is None
    assert profile["broker"]["tls"]["ca_file"] is None  # the base's CA is not the bundle's
    assert "ota" not in profile


def test_signed_updates_without_a_tuf_root_are_refused() -> None:
    with pytest.raises(InstallError, match="tuf_root is null"):
        device_profile(bundle(), {}, fleet_url="https://fleet.example")


def test_a_profile_the_bundle_makes_invalid_is_refused() -> None:
    with pytest.raises(InstallError, match=r"broker\.url"):
        device_profile(bundle(broker_url="ftp://x"), {}, fleet_url=None)


def test_a_bundle_from_an_open_broker_is_not_installed(tmp_path: Path) -> None:
    open_broker = tmp_path / "bundle.json"
    open_broker.write_text(bundle().model_dump_json())
    with pytest.raises(InstallError, match="password is null"):
        install_bundle(open_broker, BASE, root=tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_a_secret_is_never_readable_beyond_its_mode_even_under_a_lax_umask(
    tmp_path: Path,
) -> None:
    previous = os.umask(0)
    try:
        target = write_file(tmp_path, PlannedFile(PASSWORD, 0o600, b"s3cret"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"s3cret"
    assert not list(target.parent.glob(".*partial"))


def test_an_unreadable_bundle_is_refused_with_its_path(tmp_path: Path) -> None:
    broken = tmp_path / "bundle.json"
    broken.write_text("{not json")
    with pytest.raises(InstallError, match="cannot read the enrolment bundle"):
        install_bundle(broken, BASE, root=tmp_path)
    broken.write_text(json.dumps({"device": {}}))
    with pytest.raises(InstallError, match=r"device\.device_id: Field required"):
        install_bundle(broken, BASE, root=tmp_path)
