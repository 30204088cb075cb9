"""Broker-auth backends without a broker: rules, plans, files and the settings that choose them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import typing
from pathlib import Path

import pytest

from fleet_protocol.config_files import InvalidConfigError, load_config
from fleet_protocol.topics import DEFAULT_SHARE_GROUP
from fleet_server.credentials import dynsec_password_fields, mosquitto_hash
from fleet_server.exceptions import BrokerAuthError
from fleet_server.services.broker_auth import BACKENDS
from fleet_server.services.broker_auth.accounts import (
    SERVER_ROLE,
    Account,
    desired_accounts,
    device_role,
)
from fleet_server.services.broker_auth.dynsec_plan import (
    Observed,
    batches,
    document,
    parse_client,
    parse_role,
    plan,
    request,
    role_acls,
)
from fleet_server.services.broker_auth.files import write_private
from fleet_server.settings import ENV_PREFIX, BrokerAuthBackend, ServerSettings
from tests.fleet_server.test_settings import PROD_ENV

HASH = mosquitto_hash("pw", salt=b"0123456789ab", iterations=5)


def _accounts(*devices: str) -> dict[str, Account]:
    return desired_accounts(
        dict.fromkeys(devices, HASH),
        server_user="fleet-server",
        server_hash=HASH,
        share_group=DEFAULT_SHARE_GROUP,
        reserved={"fleet-broker-admin"},
    )


def _as_broker_holds(accounts: dict[str, Account]) -> Observed:
    """What a broker that applied `accounts` reports, through the plugin's answer shapes."""
    doc = document(accounts, admin_user="fleet-broker-admin", admin_hash=HASH)
    return Observed(
        dict(parse_client(c) for c in doc["clients"]), dict(parse_role(r) for r in doc["roles"])
    )


def test_a_dynsec_password_is_the_same_pbkdf2_digest_as_the_mosquitto_hash() -> None:
    fields = dynsec_password_fields(mosquitto_hash("s3cret", salt=b"saltsaltsalt", iterations=7))
    digest = hashlib.pbkdf2_hmac("sha512", b"s3cret", b"saltsaltsalt", 7)
    assert fields == {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(b"saltsaltsalt").decode(),
        "iterations": 7,
    }


@pytest.mark.parametrize("bad", ["$6$x$y", "$7$ten$c2FsdA==$aGFzaA==", "$7$5$c2FsdA==$aGFzaA=="])
def test_a_hash_the_plugin_cannot_load_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="password hash"):
        dynsec_password_fields(bad)


def test_no_device_takes_over_the_server_or_admin_user() -> None:
    accounts = _accounts("veh-1", "fleet-server", "fleet-broker-admin")
    assert sorted(accounts) == ["fleet-server", "veh-1"]
    assert accounts["fleet-server"].role == SERVER_ROLE


def test_the_generated_document_allows_only_the_server_to_join_its_group() -> None:
    doc = document(_accounts("veh-1"), admin_user="fleet-broker-admin", admin_hash=HASH)
    assert doc["defaultACLAccess"]["subscribe"] is False
    assert doc["defaultACLAccess"]["publishClientSend"] is False
    joining = {
        role["rolename"]
        for role in doc["roles"]
        for acl in role["acls"]
        if acl["acltype"] == "subscribePattern" and acl["topic"].startswith("$share/")
    }
    assert joining == {SERVER_ROLE}


def test_a_broker_that_matches_the_fleet_gets_no_command() -> None:
    accounts = _accounts("veh-1", "veh-2")
    for scope in (None, ["veh-1"], ["veh-2", "fleet-server"]):
        planned = plan(
            accounts, _as_broker_holds(accounts), scope=scope, passwords={}, protected={"a"}
        )
        assert planned.commands == ()


def test_a_new_device_is_created_with_its_password_and_its_own_role() -> None:
    accounts = _accounts("veh-1", "veh-2")
    held = _as_broker_holds(_accounts("veh-1"))
    planned = plan(accounts, held, scope=["veh-2"], passwords={"veh-2": "pw2"}, protected=())
    assert [c["command"] for c in planned.commands] == ["createRole", "createClient"]
    role, client = planned.commands
    assert role["rolename"] == device_role("veh-2")
    assert {(a["acltype"], a["topic"], a["allow"]) for a in role["acls"]} == role_acls(
        accounts["veh-2"].rules
    )
    assert client == {
        "command": "createClient",
        "username": "veh-2",
        "password": "pw2",
        "roles": [{"rolename": device_role("veh-2")}],
    }
    assert planned.outcome.created == ("veh-2",)


@pytest.mark.parametrize(
    ("scope", "user"),
    [
        (["veh-1"], "veh-1"),  # enrolled again over the client an undone enrolment left
        (None, "fleet-server"),  # the server's password rotated, found at start-up
    ],
)
def test_an_existing_client_gets_the_known_password_the_broker_refuses(
    scope: list[str] | None, user: str
) -> None:
    accounts = _accounts("veh-1")
    held = _as_broker_holds(accounts)
    planned = plan(accounts, held, scope=scope, passwords={user: "new-pw"}, protected=())
    assert planned.commands == (
        {"command": "setClientPassword", "username": user, "password": "new-pw"},
    )
    assert planned.outcome.updated == (user,)
    # One the broker accepts is not set again: that would disconnect every client of the user.
    accepted = Observed(held.clients, held.roles, accepted=frozenset({user}))
    again = plan(accounts, accepted, scope=scope, passwords={user: "new-pw"}, protected=())
    assert again.commands == ()


def test_a_decommissioned_device_loses_its_client_and_role() -> None:
    held = _as_broker_holds(_accounts("veh-1", "veh-2"))
    for scope in (["veh-2"], None):
        planned = plan(_accounts("veh-1"), held, scope=scope, passwords={}, protected=())
        assert planned.commands == (
            {"command": "deleteClient", "username": "veh-2"},
            {"command": "deleteRole", "rolename": device_role("veh-2")},
        )


def test_a_wanted_device_without_a_known_password_is_reported_not_invented() -> None:
    planned = plan(_accounts("veh-1"), Observed(), scope=None, passwords={}, protected=())
    assert planned.outcome.unrestorable == ("fleet-server", "veh-1")
    assert all(c["command"] == "createRole" for c in planned.commands)


def test_drifted_acls_and_extra_roles_are_put_back() -> None:
    accounts = _accounts("veh-1")
    held = _as_broker_holds(accounts)
    roles = dict(held.roles)
    roles[device_role("veh-1")] = roles[device_role("veh-1")] | {("subscribePattern", "#", True)}
    clients = {**held.clients, "veh-1": held.clients["veh-1"] | {SERVER_ROLE}}
    planned = plan(accounts, Observed(clients, roles), scope=None, passwords={}, protected=())
    assert planned.commands == (
        {
            "command": "removeRoleACL",
            "rolename": device_role("veh-1"),
            "acltype": "subscribePattern",
            "topic": "#",
        },
        {"command": "removeClientRole", "username": "veh-1", "rolename": SERVER_ROLE},
    )
    assert planned.outcome.updated == ("veh-1",)


def test_hand_made_clients_and_the_admin_are_left_alone() -> None:
    held = _as_broker_holds(_accounts())
    clients = {**held.clients, "grafana": frozenset({"readers"})}
    planned = plan(
        _accounts(),
        Observed(clients, held.roles),
        scope=None,
        passwords={},
        protected={"fleet-broker-admin"},
    )
    assert planned.commands == ()


def test_commands_travel_in_order_in_messages_under_the_broker_limit() -> None:
    commands = [{"command": "deleteClient", "username": f"veh-{i:04}"} for i in range(500)]
    split = batches(commands, 4096)
    assert len(split) > 1
    assert [c for batch in split for c in batch] == commands
    for batch in split:
        assert len(json.dumps(request(batch, "f" * 32))) <= 4096


def test_broker_files_are_never_readable_beyond_owner_and_group(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not widen them
    try:
        write_private(tmp_path / "passwords", "a:b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "passwords").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["passwords"]  # no temporary left


def test_concurrent_writers_never_fail_and_leave_one_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "acl"
    errors: list[BrokerAuthError] = []

    def write(n: int) -> None:
        try:
            for i in range(200):
                write_private(target, f"writer {n} line {i}\n" * 50)
        except BrokerAuthError as e:  # collected: the assertion below names it
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = target.read_text().splitlines()
    assert len(lines) == 50
    assert len(set(lines)) == 1  # one writer's whole text, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["acl"]


def test_every_backend_the_settings_offer_is_registered() -> None:
    offered = set(typing.get_args(BrokerAuthBackend)) - {"none"}
    assert set(BACKENDS) == offered


def test_production_refuses_the_password_file_backend() -> None:
    env = {
        **PROD_ENV,
        "ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH": "password_file",
        "ROADSIGN_FLEET__ENROLMENT__PASSWORD_FILE": "/srv/passwords",
        "ROADSIGN_FLEET__ENROLMENT__ACL_FILE": "/srv/acl",
        "ROADSIGN_FLEET__ENROLMENT__MOSQUITTO_PID_FILE": "/srv/pid",
    }
    with pytest.raises(InvalidConfigError, match=r"enrolment\.broker_auth password_file cannot"):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    env["ROADSIGN_FLEET__MODE"] = "development"
    assert load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)


def test_production_refuses_the_development_broker_admin_password() -> None:
    env = {**PROD_ENV, "ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH": "dynamic_security"}
    with pytest.raises(
        InvalidConfigError, match=r"enrolment\.broker_admin_password still has its development"
    ):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    env["ROADSIGN_FLEET__ENROLMENT__BROKER_ADMIN_PASSWORD"] = "a-5c0ffe"
    with pytest.raises(InvalidConfigError, match=r"enrolment\.broker_admin_password .*short"):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    env["ROADSIGN_FLEET__ENROLMENT__BROKER_ADMIN_PASSWORD"] = "a-4Rt8qZ0xWm2LkV7nB3cY9sDf6HjP1uE5"
    assert load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX).mode == "production"


@pytest.mark.parametrize(
    ("backend", "env", "message"),
    [
        ("password_file", {"ACL_FILE": "/a"}, "needs password_file, mosquitto_pid_file"),
        ("dynamic_security", {"ACL_FILE": "/a"}, "acl_file only apply to broker_auth password"),
        ("dynamic_security", {"BROKER_ADMIN_USERNAME": "fleet-server"}, "must differ from"),
        ("dynamic_security", {"BROKER_ADMIN_USERNAME": "admin/#"}, "invalid user name"),
    ],
)
def test_an_incoherent_broker_auth_setting_is_refused_naming_the_field(
    backend: BrokerAuthBackend, env: dict[str, str], message: str
) -> None:
    variables = {f"{ENV_PREFIX}ENROLMENT__{k}": v for k, v in env.items()}
    variables[f"{ENV_PREFIX}ENROLMENT__BROKER_AUTH"] = backend
    with pytest.raises(InvalidConfigError, match=message):
        load_config(ServerSettings, None, env=variables, env_prefix=ENV_PREFIX)
