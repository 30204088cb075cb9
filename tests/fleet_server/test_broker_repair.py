"""Passwords the dynamic-security broker must be given again, and what a lost answer leaves.

The plugin never shows a password, and its requests are QoS 0, so an answer can be lost after the
broker applied the request. These tests make those states with the real backend on a broker
running the generated configuration: the client an undone enrolment created, the server's
password rotated while the broker kept the old one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from fleet_protocol.topics import FLEET_READINGS_TOPIC
from fleet_server.exceptions import BrokerAuthError
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.services.broker_auth import BrokerAuth, BrokerSync
from fleet_server.services.broker_auth.accounts import Reconciled, desired_accounts
from fleet_server.services.broker_auth.dynamic_security import DynamicSecurityAuth
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.fleet_server.broker_support import (
    SERVER_PASSWORD,
    connect,
    disconnect,
    managed_broker,
    publish,
    serving,
)
from tests.mosquitto import Broker

ROTATED_PASSWORD = "server-secret-rotated-for-tests"


@pytest.fixture
def dynsec(database: DatabaseSettings, tmp_path: Path) -> Iterator[tuple[ServerSettings, Broker]]:
    with managed_broker(database, tmp_path, "dynamic_security") as started:
        yield started


@contextmanager
def admin(settings: ServerSettings) -> Iterator[DynamicSecurityAuth]:
    """A second admin connection, to see and change what the broker holds behind the API."""
    backend = DynamicSecurityAuth.from_settings(settings)
    try:
        yield backend
    finally:
        backend.close()


class AnswerLost:
    """The real backend, but the answer to its first reconciliation never comes back.

    The broker applies what was sent, as when a QoS 0 answer is lost on the way.
    """

    def __init__(self, real: BrokerAuth) -> None:
        self.real, self.lost = real, False

    def reconcile(self, *args: Any, **kwargs: Any) -> Reconciled:
        """Reconcile for real; the first time, then say no answer came."""
        outcome = self.real.reconcile(*args, **kwargs)
        if not self.lost:
            self.lost = True
            raise BrokerAuthError("the broker's dynamic-security API did not answer within 3 s")
        return outcome

    def close(self) -> None:
        """Release the real backend."""
        self.real.close()


def _sync(app: object) -> BrokerSync:
    assert isinstance(app, FastAPI)
    sync: BrokerSync = app.state.broker_sync
    return sync


def test_an_enrolment_undone_after_a_lost_answer_leaves_no_client_at_the_broker(
    dynsec: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, _), admin(settings) as held:
        sync = _sync(api.app)
        sync.backend = AnswerLost(sync.backend)
        refused = api.post("/api/v1/devices", json={"device_id": "veh-lost"})
        assert refused.status_code == 503
        assert api.get("/api/v1/devices/veh-lost").status_code == 404
        assert dict(held.observe(["veh-lost"]).clients) == {}  # taken back at once
        again = api.post("/api/v1/devices", json={"device_id": "veh-lost"})
        assert again.status_code == 201
        client, reason = connect(broker, "veh-lost", again.json()["password"])
        disconnect(client)
        assert not reason.is_failure


def test_a_device_enrolled_again_over_a_left_over_client_connects_with_its_new_password(
    dynsec: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, _), admin(settings) as held:
        # What an undone enrolment leaves where taking it back failed too: the device's client
        # and role, with a password nobody was shown.
        left = desired_accounts(
            {"veh-again": "unused"},
            server_user=settings.broker.username,
            server_hash="unused",
            share_group=settings.broker.share_group,
        )
        held.reconcile(left, scope=["veh-again"], passwords={"veh-again": "never-shown"})
        client, reason = connect(broker, "veh-again", "never-shown")
        disconnect(client)
        assert not reason.is_failure  # the leftover is real
        enrolled = api.post("/api/v1/devices", json={"device_id": "veh-again"})
        assert enrolled.status_code == 201
        for password, refused in ((enrolled.json()["password"], False), ("never-shown", True)):
            client, reason = connect(broker, "veh-again", password)
            disconnect(client)
            assert reason.is_failure is refused, password


def test_a_rotated_server_password_reaches_the_broker_and_an_unchanged_one_kicks_nobody(
    dynsec: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = dynsec
    password = SecretStr(ROTATED_PASSWORD)
    rotated = settings.model_copy(
        update={"broker": settings.broker.model_copy(update={"password": password})}
    )
    with serving(rotated) as (_, engine):  # start-up reconciles the whole broker
        worker = IngestWorker(rotated, engine, IngestMetrics(), client_id="ingest-rotated")
        try:
            assert worker.start().wait_ready(10), "ingest cannot connect with the new password"
        finally:
            worker.stop()
    client, old = connect(broker, "fleet-server", SERVER_PASSWORD)
    disconnect(client)
    assert old.is_failure
    # Setting a password disconnects every client of the user: a start-up that finds the
    # password already right must not set it again under the running workers.
    server, reason = connect(broker, "fleet-server", ROTATED_PASSWORD)
    assert not reason.is_failure
    server.reconnect_delay_set(60, 60)  # a quiet reconnect would hide a kick
    dropped = threading.Event()
    server.on_disconnect = lambda *args: dropped.set()
    try:
        with serving(rotated):
            pass
        # The plugin disconnects before it answers; this round trip comes after the answer.
        assert not publish(server, FLEET_READINGS_TOPIC, b"{}").is_failure
        assert not dropped.is_set()
    finally:
        disconnect(server)
