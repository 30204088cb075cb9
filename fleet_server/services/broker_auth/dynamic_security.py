"""Backend ``dynamic_security``: Mosquitto's dynamic-security plugin, managed over MQTT.

The server's admin user publishes commands on ``$CONTROL/dynamic-security/v1`` and reads the
answers; no files are shared and no signal is sent, so the broker may live in another pod. The
plugin refuses a device's SUBSCRIBE to anything but its own downlinks (the server's shared
group included), and deleting a client disconnects it at once. The pure part is in
`dynsec_plan`; this module is the MQTT round trips. Setting a password disconnects every client
of that user, and the plugin never shows one: a known password is tried on a connection of its
own first, and set only where the broker refuses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet_server.exceptions import BrokerAuthError, MqttSetupError
from fleet_server.mqtt import broker_address, set_tls
from fleet_server.services.broker_auth import dynsec_plan
from fleet_server.services.broker_auth.accounts import Account, Reconciled, device_role
from fleet_server.services.broker_auth.dynsec_plan import Command, Observed
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 32 * 1024
"""Commands are sent in messages below this: the broker's max_packet_size bounds what it takes."""
PAGE = 500
"""Clients or roles per list request."""
REFUSED_CREDENTIALS = frozenset({0x86, 0x87})
"""CONNACK reasons for a wrong password: bad user name or password, not authorised."""


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # A request is one small packet waiting for its answer: never hold it back (Nagle).
    if hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DynamicSecurityAuth:
    """An admin connection to the plugin; one request at a time, answers matched by id."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        timeout_s: float,
        tls: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        self.username, self.timeout_s = username, timeout_s
        self._host, self._port = host, port
        self._tls, self._ca_file = tls, ca_file
        self._client = self._new_client(username, password)
        self._client.reconnect_delay_set(1, 2)  # back soon after a broker restart
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._subscribed
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._received
        self._client.on_socket_open = _no_delay
        self._ready = threading.Event()
        self._refused: str | None = None
        self._started = False
        self._lock = threading.RLock()  # one request at a time; reconcile holds it across
        self._answers: dict[str, list[dict[str, Any]]] = {}
        self._answered = threading.Condition()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> DynamicSecurityAuth:
        """An admin client for the broker `settings.broker` names."""
        broker, enrolment = settings.broker, settings.enrolment
        try:
            address = broker_address(broker.url)
        except MqttSetupError as e:
            raise BrokerAuthError(f"the broker's admin client: {e}") from e
        return cls(
            host=address.host,
            port=address.port,
            username=enrolment.broker_admin_username,
            password=enrolment.broker_admin_password.get_secret_value(),
            timeout_s=enrolment.broker_admin_timeout_s,
            tls=address.tls,
            ca_file=broker.ca_file,
        )

    def _new_client(self, username: str, password: str) -> mqtt.Client:
        client_id = f"{username}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        if self._tls:
            try:
                set_tls(client, self._ca_file)
            except MqttSetupError as e:
                raise BrokerAuthError(f"the broker's admin client: {e}") from e
        return client

    # paho's callbacks, on its network thread
    def _connected(
        self, client: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Properties | None
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        self._refused = None
        client.subscribe(dynsec_plan.RESPONSE_TOPIC, qos=0)

    def _subscribed(
        self, c: mqtt.Client, u: Any, mid: int, reasons: list[ReasonCode], p: Properties | None
    ) -> None:
        if any(r.is_failure for r in reasons):
            self._refused = f"the broker refused {dynsec_plan.RESPONSE_TOPIC}: {reasons}"
            return
        self._ready.set()

    def _disconnected(self, c: mqtt.Client, u: Any, f: Any, r: ReasonCode, p: Any) -> None:
        self._ready.clear()

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
            key = str(responses[0]["correlationData"])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            log.warning("ignored a malformed dynamic-security response: %s", e)
            return
        with self._answered:
            if key in self._answers:  # else an answer to another replica, or a late one
                self._answers[key] = responses
                self._answered.notify_all()

    # requests
    def _connect(self) -> None:
        if not self._started:
            self._client.connect_async(self._host, self._port, keepalive=30)
            self._client.loop_start()
            self._started = True
        if not self._ready.wait(self.timeout_s):
            why = self._refused or "no answer"
            raise BrokerAuthError(
                f"cannot reach the broker's dynamic-security API at {self._host}:{self._port} "
                f"as {self.username}: {why}"
            )

    def _request(self, commands: list[Command]) -> list[dict[str, Any]]:
        """Send `commands` in one message; their responses, in order."""
        with self._lock:
            return self._request_locked(commands)

    def _request_locked(self, commands: list[Command]) -> list[dict[str, Any]]:
        self._connect()
        key = uuid.uuid4().hex
        payload = json.dumps(dynsec_plan.request(commands, key))
        with self._answered:
            self._answers[key] = []
        try:
            # QoS 0 both ways: a lost request is a timeout and an error, never a repeat; a
            # QoS 1 request made the broker's PUBACK and its answer meet Nagle and delayed
            # ACKs, 40 ms a round trip.
            sent = self._client.publish(dynsec_plan.CONTROL_TOPIC, payload, qos=0)
            if sent.rc != mqtt.MQTT_ERR_SUCCESS:
                why = mqtt.error_string(sent.rc)
                raise BrokerAuthError(f"cannot send to the broker's dynamic-security API: {why}")
            with self._answered:
                if not self._answered.wait_for(lambda: bool(self._answers[key]), self.timeout_s):
                    raise BrokerAuthError(
                        f"the broker's dynamic-security API did not answer within "
                        f"{self.timeout_s:g} s"
                    )
                responses = self._answers[key]
        finally:
            with self._answered:
                self._answers.pop(key, None)
        if len(responses) != len(commands):
            raise BrokerAuthError(
                f"dynamic-security answered {len(responses)} of {len(commands)} commands"
            )
        return responses

    def _run(self, commands: list[Command]) -> list[dict[str, Any]]:
        """Send `commands` in messages the broker takes; fail on any command's error."""
        responses: list[dict[str, Any]] = []
        for batch in dynsec_plan.batches(commands, MAX_REQUEST_BYTES):
            responses += self._request(batch)
        failed = [
            f"{r.get('command')}: {r['error']}" for r in responses if r.get("error") is not None
        ]
        if failed:
            raise BrokerAuthError("dynamic-security refused: " + "; ".join(failed[:5]))
        return responses

    def _list(self, command: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            (answer,) = self._run(
                [{"command": command, "verbose": True, "count": PAGE, "offset": len(items)}]
            )
            data = answer.get("data", {})
            page = list(data.get(key, []))
            items += page
            if not page or len(items) >= int(data.get("totalCount", len(items))):
                return items

    def observe(self, names: Collection[str] | None, roles: Collection[str] = ()) -> Observed:
        """What the broker holds for users `names` and `roles` (names None: everything)."""
        if names is None:
            clients = self._list("listClients", "clients")
            listed = self._list("listRoles", "roles")
            try:
                return Observed(
                    dict(map(dynsec_plan.parse_client, clients)),
                    dict(map(dynsec_plan.parse_role, listed)),
                )
            except (KeyError, TypeError) as e:
                raise BrokerAuthError(f"dynamic-security listed a malformed entry: {e!r}") from e
        commands: list[Command] = [{"command": "getClient", "username": n} for n in sorted(names)]
        commands += [{"command": "getRole", "rolename": r} for r in sorted(roles)]
        found_clients: dict[str, frozenset[str]] = {}
        found_roles: dict[str, frozenset[dynsec_plan.Acl]] = {}
        for response in self._request(commands) if commands else []:
            error = response.get("error")
            if error is not None:
                if "not found" in str(error):
                    continue  # absent is an answer too
                raise BrokerAuthError(
                    f"dynamic-security refused {response.get('command')}: {error}"
                )
            try:
                data = response["data"]
                if "client" in data:
                    name, client_roles = dynsec_plan.parse_client(data["client"])
                    found_clients[name] = client_roles
                else:
                    role, acls = dynsec_plan.parse_role(data["role"])
                    found_roles[role] = acls
            except (KeyError, TypeError) as e:
                raise BrokerAuthError(f"dynamic-security answered {response!r:.200}") from e
        return Observed(found_clients, found_roles)

    def accepts(self, username: str, password: str) -> bool:
        """Whether the broker lets `username` in with `password`, tried on a connection of its own.

        Raises `BrokerAuthError` where the broker gives no answer that says yes or no.
        """
        client = self._new_client(username, password)
        answered = threading.Event()
        reasons: list[ReasonCode] = []

        def connected(c: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
            reasons.append(reason)
            answered.set()

        client.on_connect = connected
        try:
            client.connect(self._host, self._port, keepalive=30)
        except OSError as e:  # refused, unreachable, or a failed TLS handshake
            raise BrokerAuthError(
                f"cannot reach the broker at {self._host}:{self._port} to try {username}'s "
                f"password: {e}"
            ) from e
        client.loop_start()
        try:
            if not answered.wait(self.timeout_s):
                raise BrokerAuthError(
                    f"the broker did not answer {username}'s connection within {self.timeout_s:g} s"
                )
        finally:
            client.disconnect()
            client.loop_stop()
        if not reasons[0].is_failure:
            return True
        if reasons[0].value in REFUSED_CREDENTIALS:
            return False
        raise BrokerAuthError(f"the broker refused {username}'s connection: {reasons[0]}")

    def reconcile(
        self,
        accounts: Mapping[str, Account],
        *,
        scope: Collection[str] | None,
        passwords: Mapping[str, str],
    ) -> Reconciled:
        """Read what the broker holds for `scope`, then send what differs."""
        with self._lock:
            if scope is None:
                observed = self.observe(None)
            else:
                roles = {device_role(n) for n in scope}
                roles |= {accounts[n].role for n in scope if n in accounts}
                observed = self.observe(scope, roles)
            # Setting a password disconnects every client of that user (all ingest workers,
            # for the server's): set it only where the broker refuses the one we know.
            accepted = [
                name
                for name, password in sorted(passwords.items())
                if name in observed.clients
                and name != self.username
                and self.accepts(name, password)
            ]
            observed = dataclasses.replace(observed, accepted=frozenset(accepted))
            planned = dynsec_plan.plan(
                accounts, observed, scope=scope, passwords=passwords, protected={self.username}
            )
            if planned.commands:
                self._run(list(planned.commands))
            return planned.outcome

    def close(self) -> None:
        """Disconnect the admin client."""
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
