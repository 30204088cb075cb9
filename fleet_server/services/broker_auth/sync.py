"""Keeping the broker's accounts equal to the committed fleet, one change at a time.

Every change runs after its transaction committed, under a lock (a thread lock here, a
PostgreSQL advisory lock across replicas), and rebuilds what it sends from a fresh read of the
database. Whichever change runs last has seen every commit before it, so concurrent enrolments
and decommissions can neither leave a device out nor bring a decommissioned one back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping

from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.credentials import mosquitto_hash
from fleet_server.db import session_scope
from fleet_server.exceptions import BrokerAuthError, StorageError
from fleet_server.services.broker_auth.accounts import Account, Reconciled, desired_accounts
from fleet_server.services.broker_auth.interface import BrokerAuth
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)


def reserved_users(settings: ServerSettings) -> frozenset[str]:
    """Broker users no device may be named after."""
    users = {settings.broker.username}
    if settings.enrolment.broker_auth == "dynamic_security":
        users.add(settings.enrolment.broker_admin_username)
    return frozenset(users)


def committed_accounts(
    settings: ServerSettings, engine: Engine, *, server_hash: str | None = None
) -> dict[str, Account]:
    """The accounts the committed fleet wants (for a configuration written before the broker)."""
    try:
        with session_scope(engine) as session:
            devices = crud.broker_users(session)
    except StorageError as e:
        raise BrokerAuthError(f"cannot read the enrolled devices: {e}") from e
    return _accounts(settings, devices, server_hash)


def _accounts(
    settings: ServerSettings, devices: Mapping[str, str], server_hash: str | None
) -> dict[str, Account]:
    return desired_accounts(
        devices,
        server_user=settings.broker.username,
        server_hash=server_hash or mosquitto_hash(settings.broker.password.get_secret_value()),
        share_group=settings.broker.share_group,
        reserved=reserved_users(settings),
    )


class BrokerSync:
    """The broker-auth backend of one server process, fed from committed state."""

    def __init__(self, backend: BrokerAuth, engine: Engine, settings: ServerSettings) -> None:
        self.backend, self._engine, self._settings = backend, engine, settings
        self.reserved = reserved_users(settings)
        self._server_password = settings.broker.password.get_secret_value()
        self._server_hash = mosquitto_hash(self._server_password)  # once: PBKDF2 is slow
        self._lock = threading.Lock()

    def reconcile(
        self,
        *,
        devices: Collection[str] | None = None,
        passwords: Mapping[str, str] | None = None,
    ) -> Reconciled:
        """Bring the broker to the committed fleet for `devices` (None: everyone).

        `passwords` are clear passwords this call knows (a device just enrolled). Call it only
        after the change committed. Raises `BrokerAuthError`.
        """
        known = {self._settings.broker.username: self._server_password, **(passwords or {})}
        try:
            with self._lock, session_scope(self._engine) as session:
                crud.lock_broker_accounts(session)  # held until this transaction ends
                accounts = _accounts(self._settings, crud.broker_users(session), self._server_hash)
                outcome = self.backend.reconcile(accounts, scope=devices, passwords=known)
        except StorageError as e:
            raise BrokerAuthError(f"cannot read the committed fleet: {e}") from e
        if outcome.unrestorable:
            log.error(
                "the broker lacks %d enrolled devices whose passwords only the database's "
                "hashes know (%s ...); rebuild its configuration with roadsign-fleet "
                "broker-config",
                len(outcome.unrestorable),
                ", ".join(outcome.unrestorable[:5]),
            )
        return outcome

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()
