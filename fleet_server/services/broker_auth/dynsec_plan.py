"""Mosquitto dynamic-security state, pure: the plugin's JSON document, and command plans.

The plugin checks a SUBSCRIBE against ``subscribePattern`` ACLs with the full filter, so a
shared subscription is allowed only where a role names ``$share/<group>/...`` itself: only the
server's role does. Everything not allowed is denied (`DEFAULT_ACCESS`).

A plan compares what the broker holds (`Observed`) with the accounts the fleet wants and yields
the commands that close the gap; run twice, the second plan is empty.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_protocol.topics import BrokerRules
from fleet_server.credentials import dynsec_password_fields
from fleet_server.services.broker_auth.accounts import (
    DEVICE_ROLE_PREFIX,
    SERVER_ROLE,
    Account,
    Reconciled,
    device_role,
)

ADMIN_ROLE = "roadsign-broker-admin"
# Mosquitto's own admin API (not our protocol): commands in, responses out.
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN_FILTER = "$CONTROL/dynamic-security/#"

DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,  # dropping a subscription it was allowed never widens anything
}

Acl = tuple[str, str, bool]
"""(acltype, topic, allow) as the plugin stores one role ACL."""

Command = dict[str, Any]


def role_acls(rules: BrokerRules) -> frozenset[Acl]:
    """A role's ACLs for `rules`: send, subscribe and receive, each allowed explicitly."""
    return frozenset(
        [("publishClientSend", topic, True) for topic in rules.publish]
        + [("subscribePattern", topic, True) for topic in rules.subscribe]
        + [("publishClientReceive", topic, True) for topic in rules.receive]
    )


def _acl_document(acl: Acl) -> dict[str, Any]:
    acltype, topic, allow = acl
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": 0}


def _role_document(name: str, acls: frozenset[Acl]) -> dict[str, Any]:
    return {"rolename": name, "acls": [_acl_document(acl) for acl in sorted(acls)]}


ADMIN_ACLS = frozenset(
    (acltype, ADMIN_FILTER, True)
    for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")
)


def document(
    accounts: Mapping[str, Account], *, admin_user: str, admin_hash: str
) -> dict[str, Any]:
    """The plugin's whole configuration file: the admin, every account, deny by default."""
    clients = [
        {
            "username": admin_user,
            **dynsec_password_fields(admin_hash),
            "roles": [{"rolename": ADMIN_ROLE}],
        }
    ]
    roles = [_role_document(ADMIN_ROLE, ADMIN_ACLS)]
    for name, account in sorted(accounts.items()):
        clients.append(
            {
                "username": name,
                **dynsec_password_fields(account.password_hash),
                "roles": [{"rolename": account.role}],
            }
        )
        roles.append(_role_document(account.role, role_acls(account.rules)))
    return {"clients": clients, "roles": roles, "defaultACLAccess": DEFAULT_ACCESS}


def request(commands: list[Command], key: str) -> dict[str, Any]:
    """One message to the plugin; every answer carries `key` back (32 hex digits)."""
    return {"commands": [{**command, "correlationData": key} for command in commands]}


def batches(commands: list[Command], max_bytes: int) -> list[list[Command]]:
    """`commands` in order, split so that each request's message stays under `max_bytes`.

    A single command over the limit travels alone (and the broker refuses it, loudly).
    """
    key = "0" * 32
    result: list[list[Command]] = []
    size = 0
    for command in commands:
        encoded = len(json.dumps(request([command], key)))
        if result and size + encoded <= max_bytes:
            result[-1].append(command)
            size += encoded  # overstates: each further command costs less than a message
        else:
            result.append([command])
            size = encoded
    return result


@dataclass(frozen=True, slots=True)
class Observed:
    """What the broker holds for some users: their roles, and those roles' ACLs."""

    clients: Mapping[str, frozenset[str]] = field(default_factory=dict)
    roles: Mapping[str, frozenset[Acl]] = field(default_factory=dict)
    accepted: frozenset[str] = frozenset()
    """Users the broker was seen to let in with the password the plan is given for them."""


def parse_client(data: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
    """A ``getClient``/``listClients`` client: its user name and role names."""
    return str(data["username"]), frozenset(str(r["rolename"]) for r in data.get("roles", []))


def parse_role(data: Mapping[str, Any]) -> tuple[str, frozenset[Acl]]:
    """A ``getRole``/``listRoles`` role: its name and ACLs."""
    acls = frozenset(
        (str(a["acltype"]), str(a["topic"]), bool(a["allow"])) for a in data.get("acls", [])
    )
    return str(data["rolename"]), acls


def _ours(roles: Collection[str]) -> bool:
    return any(r == SERVER_ROLE or r.startswith(DEVICE_ROLE_PREFIX) for r in roles)


@dataclass(frozen=True, slots=True)
class Plan:
    """Commands to send, in order, and what they change."""

    commands: tuple[Command, ...]
    outcome: Reconciled


def _retire(name: str, observed: Observed, *, scoped: bool) -> list[Command]:
    have = observed.clients.get(name)
    commands: list[Command] = []
    if have is not None and (scoped or _ours(have)):
        commands.append({"command": "deleteClient", "username": name})
    if device_role(name) in observed.roles:
        commands.append({"command": "deleteRole", "rolename": device_role(name)})
    return commands


def _role_fixes(account: Account, acls: frozenset[Acl] | None) -> list[Command]:
    want = role_acls(account.rules)
    if acls is None:
        return [{"command": "createRole", **_role_document(account.role, want)}]
    removed: list[Command] = [
        {"command": "removeRoleACL", "rolename": account.role, "acltype": t, "topic": p}
        for t, p, _ in sorted(acls - want)
    ]
    added: list[Command] = [
        {"command": "addRoleACL", "rolename": account.role, **_acl_document(acl)}
        for acl in sorted(want - acls)
    ]
    return removed + added


def _client_fixes(account: Account, have: frozenset[str]) -> list[Command]:
    commands: list[Command] = [
        {"command": "removeClientRole", "username": account.username, "rolename": extra}
        for extra in sorted(have - {account.role})
    ]
    if account.role not in have:
        commands.append(
            {"command": "addClientRole", "username": account.username, "rolename": account.role}
        )
    return commands


def plan(
    accounts: Mapping[str, Account],
    observed: Observed,
    *,
    scope: Collection[str] | None,
    passwords: Mapping[str, str],
    protected: Collection[str],
) -> Plan:
    """Commands that make the users in `scope` (None: all) what `accounts` says.

    A client the fleet no longer wants is deleted (the plugin disconnects it) when it holds one
    of our roles or was named in `scope`; clients an operator made by hand, and `protected`
    users, are left alone. A wanted client that is missing is created only where `passwords`
    has its password; one that exists gets the password `passwords` has for it unless the
    broker already accepts that one (`Observed.accepted`): the server's rotated password, a
    device enrolled again over a client an undone enrolment left behind.
    """
    if scope is None:
        names = set(accounts) | {n for n, roles in observed.clients.items() if _ours(roles)}
    else:
        names = set(scope)
    commands: list[Command] = []
    created, deleted, updated, unrestorable = [], [], [], []
    for name in sorted(names - set(protected)):
        account, have = accounts.get(name), observed.clients.get(name)
        if account is None:
            retire = _retire(name, observed, scoped=scope is not None)
            deleted += [name] if any(c["command"] == "deleteClient" for c in retire) else []
            commands += retire
            continue
        role = _role_fixes(account, observed.roles.get(account.role))
        commands += role
        if have is None and name in passwords:
            commands.append(
                {
                    "command": "createClient",
                    "username": name,
                    "password": passwords[name],
                    "roles": [{"rolename": account.role}],
                }
            )
            created.append(name)
        elif have is None:
            unrestorable.append(name)
        else:
            client = _client_fixes(account, have)
            if name in passwords and name not in observed.accepted:
                client.append(
                    {"command": "setClientPassword", "username": name, "password": passwords[name]}
                )
            commands += client
            updated += [name] if client or (role and account.role in observed.roles) else []
    if scope is None:  # roles whose device is gone for good (its client deleted by hand, say)
        wanted = {a.role for a in accounts.values()} | {device_role(n) for n in names}
        commands += [
            {"command": "deleteRole", "rolename": role}
            for role in sorted(observed.roles)
            if role.startswith(DEVICE_ROLE_PREFIX) and role not in wanted
        ]
    return Plan(
        tuple(commands),
        Reconciled(tuple(created), tuple(deleted), tuple(updated), tuple(unrestorable)),
    )
