"""Keeping Mosquitto's password and ACL files in step with the fleet, and reloading it.

Files are written whole and swapped in atomically (a broker reload never sees half a file);
Mosquitto re-reads both on SIGHUP. The content comes from `fleet_server.credentials`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from fleet_server.credentials import acl_file, password_file
from fleet_server.exceptions import FleetError


class BrokerAdminError(FleetError):
    """The broker's auth files cannot be written or the broker cannot be told to reload."""


def reload_by_pid_file(pid_file: Path) -> Callable[[], None]:
    """A reload that sends SIGHUP to the Mosquitto whose pid is in `pid_file`."""

    def reload() -> None:
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
        except (OSError, ValueError) as e:
            raise BrokerAdminError(f"cannot signal the broker from {pid_file}: {e}") from e

    return reload


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text)
        temporary.chmod(0o640)
        os.replace(temporary, path)
    except OSError as e:
        raise BrokerAdminError(f"cannot write {path}: {e}") from e


class MosquittoAuth:
    """The broker's password and ACL files, owned by the fleet server."""

    def __init__(
        self, passwords: Path, acl: Path, server_user: str, reload: Callable[[], None]
    ) -> None:
        self.passwords, self.acl, self.server_user = passwords, acl, server_user
        self._reload = reload

    def sync(self, users: Mapping[str, str]) -> None:
        """Make the broker accept exactly `users` (name -> hash), now."""
        _write(self.passwords, password_file(users))
        _write(self.acl, acl_file(self.server_user))
        self._reload()
