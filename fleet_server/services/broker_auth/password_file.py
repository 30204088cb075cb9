"""Backend ``password_file``: Mosquitto's password and ACL files, reloaded by SIGHUP.

For development and the single-tenant demo only. Mosquitto 2.0 never checks a SUBSCRIBE
against its ACL file: an enrolled device may subscribe to the server's shared group, and every
message the broker then hands it (and drops, for want of read access) is one the server never
gets, although the sender saw it acknowledged. Production refuses this backend.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from fleet_server.credentials import acl_file, password_file
from fleet_server.exceptions import BrokerAuthError
from fleet_server.services.broker_auth.accounts import Account, Reconciled
from fleet_server.services.broker_auth.files import exclusive, write_private
from fleet_server.settings import ServerSettings


def broker_files(accounts: Mapping[str, Account]) -> tuple[str, str]:
    """The password file's and the ACL file's text for `accounts`."""
    hashes = {name: account.password_hash for name, account in accounts.items()}
    return password_file(hashes), acl_file({n: a.rules for n, a in accounts.items()})


def _users(path: Path) -> set[str]:
    try:
        return {line.partition(":")[0] for line in path.read_text().splitlines() if line}
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise BrokerAuthError(f"cannot read {path}: {e}") from e


class PasswordFileAuth:
    """Writes both files whole from the full account list, then SIGHUPs the broker."""

    def __init__(self, *, passwords: Path, acl: Path, pid_file: Path) -> None:
        self.passwords, self.acl, self.pid_file = passwords, acl, pid_file
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> PasswordFileAuth:
        """The backend on the files `settings.enrolment` names."""
        enrolment = settings.enrolment
        if not (enrolment.password_file and enrolment.acl_file and enrolment.mosquitto_pid_file):
            raise BrokerAuthError("broker_auth password_file needs its three files")
        return cls(
            passwords=enrolment.password_file,
            acl=enrolment.acl_file,
            pid_file=enrolment.mosquitto_pid_file,
        )

    @property
    def lock_file(self) -> Path:
        """The file every writer of these broker files locks."""
        return self.passwords.with_name(f".{self.passwords.name}.lock")

    def write(self, accounts: Mapping[str, Account]) -> set[str]:
        """Write both files for `accounts` under the lock, signalling nobody; the old users."""
        passwords_text, acl_text = broker_files(accounts)
        with self._lock, exclusive(self.lock_file):
            before = _users(self.passwords)
            write_private(self.passwords, passwords_text)
            write_private(self.acl, acl_text)
        return before

    def reconcile(
        self,
        accounts: Mapping[str, Account],
        *,
        scope: Collection[str] | None,
        passwords: Mapping[str, str],
    ) -> Reconciled:
        """Rewrite both files from all `accounts` (a file is always whole), then reload.

        The SIGHUP may come from another replica's later write too: the broker reads whatever
        is newest, and every write is whole and current.
        """
        before = self.write(accounts)
        self._reload()
        return Reconciled(
            created=tuple(sorted(set(accounts) - before)),
            deleted=tuple(sorted(before - set(accounts))),
        )

    def _reload(self) -> None:
        try:
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGHUP)
        except (OSError, ValueError) as e:
            raise BrokerAuthError(f"cannot signal the broker from {self.pid_file}: {e}") from e

    def close(self) -> None:
        """Nothing is held between calls."""
