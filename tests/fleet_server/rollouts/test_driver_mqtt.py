"""The rollout driver inside ``serve`` with a real Mosquitto: with ``rollouts.enabled`` its
thread ticks on its own, signs a new rollout's first stage and nudges each of its devices on
that device's ota/command topic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from fleet_protocol.codec import decode_as
from fleet_protocol.messages import OtaAction, OtaCommand
from fleet_protocol.topics import MessageKind, device_topic
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.models import DeviceSelector, RolloutCreate, utcnow
from fleet_server.rollouts.requests import create_rollout
from fleet_server.rollouts.values import StageSpec
from fleet_server.settings import BrokerSettings, DatabaseSettings, RolloutSettings
from tests.fleet_server.rollouts.driver_support import (
    DEVICES,
    NEW_VERSION,
    Fleet,
    make_fleet,
    signed_assignments,
)
from tests.mosquitto import Broker
from tests.waiting import wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path, broker: Broker) -> Fleet:
    fleet = make_fleet(database, engine, tmp_path)
    fleet.settings = fleet.settings.model_copy(
        update={
            "broker": BrokerSettings(url=broker.url),
            "rollouts": RolloutSettings(enabled=True, tick_s=0.2),
        }
    )
    return fleet


class DeviceListener:
    """MQTT clients' view of the devices' ota/command topics."""

    def __init__(self, broker: Broker, device_ids: list[str]) -> None:
        self.received: list[tuple[str, OtaCommand]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        topics = [(device_topic(d, MessageKind.OTA_COMMAND), 1) for d in device_ids]
        self._client.on_connect = lambda c, *_: c.subscribe(topics)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(10)

    def _message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, decode_as(OtaCommand, bytes(message.payload))))

    def commands(self) -> list[tuple[str, OtaCommand]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_the_serve_driver_signs_a_stage_and_its_devices_get_the_nudge_on_their_topic(
    fleet: Fleet, broker: Broker
) -> None:
    listener = DeviceListener(broker, DEVICES)
    try:
        with TestClient(create_app(fleet.settings, fleet.engine)):
            body = RolloutCreate(
                rollout_id="r-mqtt",
                model_name="roadsign-test",
                model_version=NEW_VERSION,
                selector=DeviceSelector(device_ids=DEVICES[:3]),
                stages=[StageSpec(percent=100)],
            )
            with session_scope(fleet.engine) as session:
                create_rollout(session, body, utcnow())  # as the CLI does: left to the driver
            signed = wait_until(
                lambda: len(signed_assignments(fleet.engine)) == 3, 20, "the driver to sign"
            )
            assert signed
            wait_until(lambda: len(listener.commands()) == 3, 20, "three nudges")
    finally:
        listener.close()
    by_topic = dict(listener.commands())
    assert set(by_topic) == {device_topic(d, MessageKind.OTA_COMMAND) for d in DEVICES[:3]}
    for topic, command in by_topic.items():
        assert topic == device_topic(command.device_id, MessageKind.OTA_COMMAND)
        assert command.action is OtaAction.INSTALL
        assert command.model_version == NEW_VERSION
        assert command.target_path == fleet.new_target
        assert command.rollout_id == "r-mqtt"
