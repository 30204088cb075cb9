"""The MQTT link against a real Mosquitto: nothing lost in outages or kills; status stays true."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.mqtt_link import LinkError, LinkSettings, MqttLink
from edge_agent.outbox import Outbox
from fleet_protocol.codec import decode_device_message, encode
from fleet_protocol.messages import DeviceState, Envelope, Reading, StatusMessage, StatusReason
from fleet_protocol.topics import MessageKind, device_topic
from tests.conftest import make_reading
from tests.mosquitto import Broker
from tests.waiting import wait_until

DEVICE = "veh-0042"


class Subscriber:
    """A plain subscriber that records what arrives on a device's topics, decoded."""

    def __init__(self, broker: Broker, *, session: str | None = None) -> None:
        """With a `session` name its subscription and missed QoS 1 messages outlive a drop."""
        self.messages: list[Envelope] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=session or "", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(f"roadsign/v1/devices/{DEVICE}/#", 1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        properties = None
        if session is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 600
        self.client.connect(
            broker.host, broker.port, clean_start=session is None, properties=properties
        )
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        _, decoded = decode_device_message(message.topic, bytes(message.payload))
        with self.lock:
            self.messages.append(decoded)

    def readings(self) -> list[Reading]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, Reading)]

    def statuses(self) -> list[StatusMessage]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, StatusMessage)]

    def last_reason(self) -> str | None:
        statuses = self.statuses()
        return statuses[-1].reason if statuses else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _status_factory(outbox: Outbox) -> Callable[[StatusReason], bytes]:
    def build(reason: StatusReason) -> bytes:
        state = DeviceState.ONLINE if reason == "connected" else DeviceState.OFFLINE
        return encode(
            StatusMessage(
                device_id=DEVICE,
                seq=outbox.next_seq(),
                timestamp=datetime.now(UTC),
                state=state,
                reason=reason,
                agent_version="0.1.0",
            )
        )

    return build


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


def _put_readings(outbox: Outbox, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = outbox.next_seq()
        outbox.put(
            device_topic(DEVICE, MessageKind.READINGS),
            encode(make_reading(device_id=DEVICE, seq=seq)),
        )
        seqs.append(seq)
    return seqs


def _link(broker: Broker, outbox: Outbox) -> MqttLink:
    return MqttLink(
        LinkSettings(url=broker.url, device_id=DEVICE, keepalive_s=5, reconnect_max_s=1),
        outbox,
        _status_factory(outbox),
    )


def test_outbox_is_delivered_and_emptied_and_birth_is_retained(
    broker: Broker, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_messages=1000, max_bytes=10**7)
    seqs = _put_readings(outbox, 50)
    subscriber = Subscriber(broker)
    link = _link(broker, outbox)
    link.start()
    try:
        assert link.wait_drained(15)
        wait_until(lambda: len(subscriber.readings()) >= 50, 15, "50 readings at the subscriber")
        assert sorted(r.seq for r in subscriber.readings()) == seqs
        assert link.stats.acknowledged == 50
        assert subscriber.statuses()[-1].state == "online"
    finally:
        link.stop()
        wait_until(lambda: subscriber.last_reason() == "shutdown", 15, "the shutdown status")
        subscriber.close()


@pytest.mark.slow
def test_readings_made_while_the_broker_is_down_for_30s_all_arrive_once(tmp_path: Path) -> None:
    # The subscriber keeps a persistent session on a broker that persists sessions, as the
    # fleet's ingestion does: whichever of it and the device reconnects first after the
    # restart, nothing the device sends is missed.
    broker = Broker(tmp_path / "broker", persistent=True).start()
    outbox = Outbox(tmp_path / "o.sqlite3", max_messages=10_000, max_bytes=10**7)
    subscriber = Subscriber(broker, session="fleet-test-subscriber")
    link = _link(broker, outbox)
    link.start()
    try:
        assert link.wait_connected(10)
        before = _put_readings(outbox, 20)
        link.notify()
        assert link.wait_drained(10)
        broker.stop()
        wait_until(lambda: not link.connected, 10, "the link to notice the broker is gone")
        during = []
        for _ in range(30):  # one reading a second for 30 s, broker down
            during += _put_readings(outbox, 1)
            time.sleep(1)
        assert outbox.depth == len(during) == 30  # none acknowledged while the broker is down
        broker.start()
        assert link.wait_connected(20)
        assert link.wait_drained(20)
        expected = set(before + during)
        wait_until(lambda: {r.seq for r in subscriber.readings()} >= expected, 20, "every reading")
        seen = [(r.device_id, r.seq) for r in subscriber.readings()]
        assert {s for _, s in seen} == expected  # none lost
        assert len(set(seen)) == len(
            expected
        )  # none duplicated after de-duplicating by (device, seq)
    finally:
        link.stop()
        subscriber.close()
        broker.stop()


def test_kill_9_of_the_agent_publishes_the_last_will_and_loses_no_stored_reading(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "o.sqlite3"
    script = textwrap.dedent(f"""
        import time
        from datetime import UTC, datetime
        from pathlib import Path
        from edge_agent.mqtt_link import LinkSettings, MqttLink
        from edge_agent.outbox import Outbox
        from fleet_protocol.codec import encode
        from fleet_protocol.messages import StatusMessage
        outbox = Outbox(Path({str(db)!r}), max_messages=1000, max_bytes=10**7)
        def status(reason):
            state = "online" if reason == "connected" else "offline"
            return encode(StatusMessage(device_id={DEVICE!r}, seq=outbox.next_seq(),
                timestamp=datetime.now(UTC), state=state, reason=reason, agent_version="0.1.0"))
        link = MqttLink(LinkSettings(url={broker.url!r}, device_id={DEVICE!r}, keepalive_s=5),
                        outbox, status)
        link.start()
        link.wait_connected(10)
        print("connected", flush=True)
        time.sleep(600)
    """)
    subscriber = Subscriber(broker)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "connected"
        wait_until(lambda: any(s.state == "online" for s in subscriber.statuses()), 15, "the birth")
        outbox = Outbox(db, max_messages=1000, max_bytes=10**7)
        stored = _put_readings(outbox, 5)  # stored while the agent is up, not yet sent by it
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        # The broker notices the dead connection within 1.5 keep-alives and sends the will.
        wait_until(lambda: subscriber.last_reason() == "connection_lost", 20, "the last will")
        kept = {decode_device_message(m.topic, m.payload)[1].seq for m in outbox.pending(100)}
        arrived = {r.seq for r in subscriber.readings()}
        # The agent may have sent some of them before it died (its drainer polls the outbox):
        # each is still stored or was delivered (or both, sent but not yet acknowledged), and
        # the outbox holds nothing else.
        assert kept | arrived == set(stored)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()
        subscriber.close()


def test_a_url_that_is_not_mqtt_is_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_messages=10, max_bytes=10**6)
    with pytest.raises(LinkError, match="not an MQTT broker URL"):
        MqttLink(LinkSettings(url="http://x", device_id=DEVICE), outbox, lambda r: b"")
