"""The buffered-read paho client receives exactly what a broker sends, across reconnects."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.ingest.mqtt_client import READ_SIZE, BufferedReadClient
from tests.mosquitto import Broker
from tests.waiting import wait_until

TOPIC = "test/buffered"


def _payload(i: int) -> bytes:
    # Sizes from a few bytes to past the read size, so packets straddle every buffer boundary.
    size = (i * 7919) % (READ_SIZE + 5000) if i % 50 == 0 else 10 + (i * 37) % 900
    return i.to_bytes(4, "big") + bytes([i % 251]) * size


def _wait(condition: threading.Event, seconds: float) -> None:
    assert condition.wait(seconds), "timed out"


def test_every_message_arrives_whole_and_in_order_through_a_broker_restart(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "broker", persistent=True).start()
    received: list[bytes] = []
    first_half, everything = threading.Event(), threading.Event()
    total = 2000

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append(bytes(message.payload))
        if len(received) == total // 2:
            first_half.set()
        if len(received) == total:
            everything.set()

    subscriber = BufferedReadClient(
        CallbackAPIVersion.VERSION2, client_id="buffered", protocol=mqtt.MQTTv5
    )
    connects = {"buffered": 0, "pub": 0}

    def on_connect(client: mqtt.Client, *args: object) -> None:
        if client is subscriber:
            connects["buffered"] += 1
            client.subscribe(TOPIC, qos=1)
        else:
            connects["pub"] += 1

    subscribed = threading.Event()
    subscriber.on_message = on_message
    subscriber.on_connect = on_connect
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.reconnect_delay_set(min_delay=1, max_delay=1)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    publisher.reconnect_delay_set(min_delay=1, max_delay=1)
    publisher.on_connect = on_connect
    try:
        subscriber.connect("127.0.0.1", broker.port)
        subscriber.loop_start()
        _wait(subscribed, 10)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        for i in range(total // 2):
            publisher.publish(TOPIC, _payload(i), qos=1).wait_for_publish(5)
        _wait(first_half, 30)
        broker.stop()  # the subscriber's socket dies with buffered state in between
        broker.start()
        wait_until(lambda: min(connects.values()) >= 2, 30, "both clients back")
        assert connects == {"buffered": 2, "pub": 2}
        for i in range(total // 2, total):
            publisher.publish(TOPIC, _payload(i), qos=1).wait_for_publish(30)
        _wait(everything, 60)
    finally:
        publisher.loop_stop()
        subscriber.loop_stop()
        broker.stop()
    assert received == [_payload(i) for i in range(total)]
