"""How the fleet server keeps the broker's accounts: one interface, one module per backend.

`BACKENDS` is the registry ``enrolment.broker_auth`` chooses from (``none``: not managed);
`make_broker_sync` builds the chosen one behind a `BrokerSync`, which feeds it committed state.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from fleet_server.services.broker_auth.dynamic_security import DynamicSecurityAuth
from fleet_server.services.broker_auth.interface import BrokerAuth
from fleet_server.services.broker_auth.password_file import PasswordFileAuth
from fleet_server.services.broker_auth.sync import BrokerSync
from fleet_server.settings import ServerSettings

BACKENDS: dict[str, Callable[[ServerSettings], BrokerAuth]] = {
    "dynamic_security": DynamicSecurityAuth.from_settings,
    "password_file": PasswordFileAuth.from_settings,
}


def make_broker_sync(settings: ServerSettings, engine: Engine) -> BrokerSync | None:
    """The configured backend behind a `BrokerSync`, or None where the broker is not managed."""
    choice = settings.enrolment.broker_auth
    if choice == "none":
        return None
    return BrokerSync(BACKENDS[choice](settings), engine, settings)


__all__ = ["BACKENDS", "BrokerAuth", "BrokerSync", "make_broker_sync"]
