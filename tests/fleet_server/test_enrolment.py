"""Enrolment against a Mosquitto that knows only what the server told it: own topics only.

Every broker here runs on the configuration ``roadsign-fleet broker-config`` generates, for the
backend under test, so what is checked is what ships.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, text

from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.outbox import Outbox
from fleet_protocol.codec import encode
from fleet_protocol.topics import (
    DEFAULT_SHARE_GROUP,
    MessageKind,
    device_topic,
)
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.services.broker_auth.dynamic_security import DynamicSecurityAuth
from fleet_server.settings import BrokerAuthBackend, DatabaseSettings, ServerSettings
from tests.conftest import make_reading
from tests.edge_agent.test_mqtt_link import DEVICE as AGENT
from tests.edge_agent.test_mqtt_link import _status_factory
from tests.fleet_server.broker_support import (
    SERVER_PASSWORD,
    connect,
    disconnect,
    generated_broker,
    managed_broker,
    publish,
    serving,
)
from tests.mosquitto import Broker
from tests.waiting import wait_until

BACKENDS: list[BrokerAuthBackend] = ["dynamic_security", "password_file"]
NOT_AUTHORIZED = 0x87


@pytest.fixture(params=BACKENDS)
def managed(
    request: pytest.FixtureRequest, database: DatabaseSettings, tmp_path: Path
) -> Iterator[tuple[ServerSettings, Broker]]:
    with managed_broker(database, tmp_path, request.param) as started:
        yield started


@pytest.fixture
def dynsec(database: DatabaseSettings, tmp_path: Path) -> Iterator[tuple[ServerSettings, Broker]]:
    with managed_broker(database, tmp_path, "dynamic_security") as started:
        yield started


def _subscribe(client: mqtt.Client, topic_filter: str) -> ReasonCode:
    answered = threading.Event()
    outcome: dict[str, ReasonCode] = {}

    def subscribed(
        c: mqtt.Client, u: object, mid: int, reasons: list[ReasonCode], p: object
    ) -> None:
        outcome["reason"] = reasons[0]
        answered.set()

    client.on_subscribe = subscribed
    client.subscribe(topic_filter, qos=1)
    assert answered.wait(10), "no SUBACK"
    return outcome["reason"]


def _rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        return [
            (r[0], int(r[1]))
            for r in connection.execute(text("SELECT device_id, seq FROM reading"))
        ]


def test_devices_get_their_own_credentials_and_topics_only(
    managed: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = managed
    with serving(settings) as (api, engine):
        a = api.post("/api/v1/devices", json={"device_id": "veh-a"}).json()
        b = api.post("/api/v1/devices", json={"device_id": "veh-b"}).json()
        assert a["username"] == "veh-a"
        assert a["password"]
        assert a["broker_url"] == broker.url
        worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ingest-acl").start()
        assert worker.wait_ready(10)  # subscribed before anything is sent
        device_a, reason = connect(broker, "veh-a", a["password"])
        try:
            assert not reason.is_failure
            spoof = publish(
                device_a,
                device_topic("veh-b", MessageKind.READINGS),
                encode(make_reading(device_id="veh-b", seq=2)),
            )
            assert spoof.value == NOT_AUTHORIZED
            own = publish(
                device_a,
                device_topic("veh-a", MessageKind.READINGS),
                encode(make_reading(device_id="veh-a", seq=1)),
            )
            assert own.value == 0  # success, and somebody (the worker) subscribed
            wait_until(lambda: _rows(engine), 10, "the reading stored")
            assert _rows(engine) == [("veh-a", 1)]
        finally:
            disconnect(device_a)
        _, wrong = connect(broker, "veh-b", "not-the-password")
        assert wrong.is_failure
        _, anonymous = connect(broker, "veh-c", None)
        assert anonymous.is_failure
        client_b, before = connect(broker, "veh-b", b["password"])
        disconnect(client_b)
        assert not before.is_failure
        assert api.post("/api/v1/devices/veh-b/decommission").is_success
        _, after = connect(broker, "veh-b", b["password"])
        assert after.is_failure  # revoked at once
        worker.stop()


def test_decommission_disconnects_a_device_that_is_still_connected(
    managed: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = managed
    with serving(settings) as (api, _):
        enrolled = api.post("/api/v1/devices", json={"device_id": "veh-d"}).json()
        client, reason = connect(broker, "veh-d", enrolled["password"])
        dropped = threading.Event()
        client.on_disconnect = lambda *args: dropped.set()
        client.reconnect_delay_set(60, 60)  # a retry inside the test would hide the kick
        try:
            assert not reason.is_failure
            assert not dropped.is_set()
            assert api.post("/api/v1/devices/veh-d/decommission").is_success
            assert dropped.wait(10), "the broker kept a decommissioned device connected"
        finally:
            client.loop_stop()


def test_an_enrolled_attacker_costs_another_device_no_reading(
    dynsec: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, engine):
        victim = api.post("/api/v1/devices", json={"device_id": "victim"})
        attacker = api.post("/api/v1/devices", json={"device_id": "attacker"})
        worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ingest-a").start()
        assert worker.wait_ready(10)
        bad, reason = connect(broker, "attacker", attacker.json()["password"])
        assert not reason.is_failure
        heard: list[str] = []
        bad.on_message = lambda c, u, message: heard.append(message.topic)
        stolen = [
            f"$share/{DEFAULT_SHARE_GROUP}/roadsign/v1/devices/+/readings",  # the server's group
            "#",
            device_topic("victim", MessageKind.READINGS),
            device_topic("victim", MessageKind.OTA_COMMAND),
        ]
        subacks = [_subscribe(bad, topic_filter) for topic_filter in stolen]
        spoofed = publish(
            bad,
            device_topic("victim", MessageKind.READINGS),
            encode(make_reading(device_id="victim", seq=10_000)),
        )
        good, reason = connect(broker, "victim", victim.json()["password"])
        assert not reason.is_failure
        acked = threading.Semaphore(0)
        good.on_publish = lambda *args: acked.release()
        for seq in range(200):
            topic = device_topic("victim", MessageKind.READINGS)
            good.publish(topic, encode(make_reading(device_id="victim", seq=seq)), qos=1)
        assert all(acked.acquire(timeout=10) for _ in range(200))  # the sender may forget them
        wait_until(lambda: len(_rows(engine)) >= 200, 30, "200 readings stored")
        assert sorted(_rows(engine)) == [("victim", seq) for seq in range(200)]  # none lost
        assert spoofed.value == NOT_AUTHORIZED
        assert [r.value >= 0x80 for r in subacks] == [True] * len(stolen), subacks
        assert heard == []
        disconnect(good)
        disconnect(bad)
        worker.stop()


@contextmanager
def broker_users(settings: ServerSettings) -> Iterator[Callable[[list[str] | None], set[str]]]:
    """Which of some users (None: all) the broker holds: password-file users or plugin clients."""
    enrolment = settings.enrolment
    if enrolment.broker_auth == "password_file":
        assert enrolment.password_file is not None
        path = enrolment.password_file

        def in_file(names: list[str] | None) -> set[str]:
            found = {line.partition(":")[0] for line in path.read_text().splitlines()}
            return found if names is None else found & set(names)

        yield in_file
        return
    probe = DynamicSecurityAuth.from_settings(settings)
    try:
        yield lambda names: set(probe.observe(names).clients) - {enrolment.broker_admin_username}
    finally:
        probe.close()


def _active(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT device_id FROM device WHERE status != 'decommissioned'")
            ).scalars()
        )


def test_concurrent_enrolments_and_decommissions_leave_the_broker_equal_to_the_fleet(
    managed: tuple[ServerSettings, Broker],
) -> None:
    settings, _ = managed
    wrong: list[str] = []
    results: dict[int, list[int]] = {}

    def enrolled(api: TestClient, device: str) -> bool:
        return api.get(f"/api/v1/devices/{device}").is_success

    def churn(api: TestClient, engine: Engine, users: Callable[..., set[str]], k: int) -> None:
        """300 calls: enrol two of its own, decommission one the other thread just enrolled."""
        codes = results.setdefault(k, [])
        for i in range(100):
            for device in (f"t{k}-{2 * i}", f"t{k}-{2 * i + 1}"):
                codes.append(api.post("/api/v1/devices", json={"device_id": device}).status_code)
                # It may be decommissioned already (by the other thread); else the broker has it.
                if not users([device]) and device in _active(engine):
                    wrong.append(f"{device} enrolled but unknown to the broker")
            theirs = f"t{1 - k}-{2 * i}"  # racing the other thread's enrolment of it
            try:
                wait_until(partial(enrolled, api, theirs), 30, f"{theirs} enrolled")
            except AssertionError as e:  # collected: the assertion below names it
                wrong.append(str(e))
            codes.append(api.post(f"/api/v1/devices/{theirs}/decommission").status_code)
            if users([theirs]):
                wrong.append(f"{theirs} decommissioned but still a broker user")

    with serving(settings) as (api, engine), broker_users(settings) as users:
        threads = [threading.Thread(target=churn, args=(api, engine, users, k)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        committed = _active(engine)
        assert sorted(set(results[0] + results[1])) == [200, 201]  # no call failed
        assert len(results[0] + results[1]) == 600
        assert wrong == []
        assert len(committed) == 200
        assert users(None) == committed | {settings.broker.username}


def test_a_broker_rebuilt_from_the_database_takes_back_the_enrolled_devices(
    dynsec: tuple[ServerSettings, Broker], tmp_path: Path
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, _):
        kept = api.post("/api/v1/devices", json={"device_id": "veh-kept"}).json()
        gone = api.post("/api/v1/devices", json={"device_id": "veh-gone"}).json()
        assert api.post("/api/v1/devices/veh-gone/decommission").is_success
    broker.stop()
    (tmp_path / "broker" / "dynamic-security.json").unlink()  # the broker's state is lost
    rebuilt = generated_broker(settings, tmp_path / "broker").start()
    try:
        for user, password, refused in (
            ("veh-kept", kept["password"], False),
            ("veh-gone", gone["password"], True),
            ("fleet-server", SERVER_PASSWORD, False),
        ):
            client, reason = connect(rebuilt, user, password)
            disconnect(client)
            assert reason.is_failure is refused, user
    finally:
        rebuilt.stop()


def test_enrolment_is_undone_when_the_broker_cannot_be_told(
    dynsec: tuple[ServerSettings, Broker],
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, _):
        broker.stop()
        refused = api.post("/api/v1/devices", json={"device_id": "veh-late"})
        assert refused.status_code == 503
        assert "enrolment undone" in refused.json()["detail"]
        assert api.get("/api/v1/devices/veh-late").status_code == 404
        broker.start()
        again = api.post("/api/v1/devices", json={"device_id": "veh-late"})
        assert again.status_code == 201
        client, reason = connect(broker, "veh-late", again.json()["password"])
        disconnect(client)
        assert not reason.is_failure


@pytest.mark.parametrize("name", ["fleet-server", "fleet-broker-admin"])
def test_no_device_may_be_enrolled_under_a_broker_user_of_the_server(
    dynsec: tuple[ServerSettings, Broker], name: str
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, _):
        assert api.post("/api/v1/devices", json={"device_id": name}).status_code == 409
        client, reason = connect(broker, "fleet-server", SERVER_PASSWORD)
        disconnect(client)
        assert not reason.is_failure  # the server's own account is untouched


def test_the_edge_agent_link_reports_and_hears_the_server_within_its_own_account(
    dynsec: tuple[ServerSettings, Broker], tmp_path: Path
) -> None:
    settings, broker = dynsec
    with serving(settings) as (api, engine):
        enrolled = api.post("/api/v1/devices", json={"device_id": AGENT}).json()
        worker = IngestWorker(settings, engine, IngestMetrics(), client_id="ingest-l").start()
        assert worker.wait_ready(10)
        server, _ = connect(broker, "fleet-server", SERVER_PASSWORD)
        desired = device_topic(AGENT, MessageKind.CONFIG_DESIRED)
        server.publish(desired, b"{}", qos=1, retain=True).wait_for_publish(10)
        disconnect(server)
        outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=100, max_bytes=10**6)
        for _ in range(5):
            seq = outbox.next_seq()
            reading = encode(make_reading(device_id=AGENT, seq=seq))
            outbox.put(device_topic(AGENT, MessageKind.READINGS), reading)
        heard: list[str] = []
        link = MqttLink(
            LinkSettings(
                url=broker.url,
                device_id=AGENT,
                username=enrolled["username"],
                password=enrolled["password"],
            ),
            outbox,
            _status_factory(outbox),
            on_message=lambda topic, payload: heard.append(topic),
        )
        link.start()
        try:
            assert link.wait_drained(10)  # every reading acknowledged
            wait_until(lambda: len(_rows(engine)) == 5 and desired in heard, 10, "rows, downlink")
            assert link.stats.rejected == 0
        finally:
            link.stop()
            worker.stop()
