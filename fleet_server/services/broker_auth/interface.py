"""The one interface every broker-auth backend implements."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from fleet_server.services.broker_auth.accounts import Account, Reconciled


class BrokerAuth(Protocol):
    """Makes a broker hold exactly the accounts the fleet wants."""

    def reconcile(
        self,
        accounts: Mapping[str, Account],
        *,
        scope: Collection[str] | None,
        passwords: Mapping[str, str],
    ) -> Reconciled:
        """Bring the broker to `accounts` for the users in `scope` (None: all of them).

        `accounts` is the whole committed fleet; `passwords` holds the clear passwords known
        to this call (a device being enrolled, the server), which the broker accepts afterwards
        for those of its users in scope, whatever password they had. Raises `BrokerAuthError`.
        """
        ...

    def close(self) -> None:
        """Release connections; the backend is not used again."""
        ...
