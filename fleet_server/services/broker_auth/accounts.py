"""The broker accounts the fleet wants, pure: every user, its password hash, role and rules.

The server user reads every device and sends downlinks; each enrolled, not decommissioned
device gets its own role holding only its own topics (Mosquitto 2.0's dynamic-security plugin
does not substitute ``%u`` in role ACLs, so one shared role cannot say "own topics").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from fleet_protocol.topics import BrokerRules, device_broker_rules, server_broker_rules

SERVER_ROLE = "roadsign-server"
DEVICE_ROLE_PREFIX = "roadsign-device-"


@dataclass(frozen=True, slots=True)
class Account:
    """One broker user the fleet wants: name, ``$7$`` hash, role name and topic rules."""

    username: str
    password_hash: str
    role: str
    rules: BrokerRules


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a reconciliation changed at the broker, by user name."""

    created: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unrestorable: tuple[str, ...] = field(default=())
    """Wanted but missing at the broker, and only their hash is known: the dynamic-security
    API takes passwords in clear, so only a configuration rebuilt from the database
    (``roadsign-fleet broker-config``) can bring them back."""


def device_role(device_id: str) -> str:
    """The role that holds one device's topics."""
    return DEVICE_ROLE_PREFIX + device_id


def desired_accounts(
    devices: Mapping[str, str],
    *,
    server_user: str,
    server_hash: str,
    share_group: str,
    reserved: Collection[str] = (),
) -> dict[str, Account]:
    """Every account the broker should hold, by user name, from `devices` (id -> hash).

    A device named like the server or a `reserved` user (the broker admin) never becomes an
    account: the API refuses to enrol one, and an older row must not take over those users.
    """
    taken = {server_user, *reserved}
    accounts = {
        device_id: Account(
            device_id, digest, device_role(device_id), device_broker_rules(device_id)
        )
        for device_id, digest in devices.items()
        if device_id not in taken
    }
    accounts[server_user] = Account(
        server_user, server_hash, SERVER_ROLE, server_broker_rules(share_group)
    )
    return accounts
