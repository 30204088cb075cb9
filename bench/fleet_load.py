"""A lean load generator for the ingestion benchmark: many MQTT v5 devices in few processes.

`roadsign-agent simulate` runs each virtual device with the agent's real outbox (SQLite) and a
network thread of its own: right for fleet tests, but on a 2-core machine it spends ~0.8 ms of
CPU per reading, so it cannot offer the server 5,000 readings/s while the server also runs.
This generator keeps what the broker and the server see identical (one MQTT v5 connection per
device with its own client id, a retained birth status and last will, QoS 1 readings and
health reports in the real `fleet_protocol` encoding, increasing sequence numbers) and drops
what only the device needs (the disk outbox). Each process drives its devices' paho clients
from one epoll loop instead of a thread per device.

`sent` counts readings published; `acknowledged` counts every PUBACK the broker returned
(readings, health, statuses); a device whose connection dropped is counted in `disconnects`
(paho resends its QoS 1 messages in flight on the reconnect).
"""

from __future__ import annotations

import multiprocessing
import queue
import selectors
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_protocol.codec import encode
from fleet_protocol.messages import (
    CameraState,
    DeviceState,
    HealthReport,
    ModelRef,
    Reading,
    StatusMessage,
)
from fleet_protocol.taxonomy import SignType
from fleet_protocol.topics import MessageKind, device_topic

MODEL = ModelRef(version="bench-1", sha256="0" * 64)
SPEEDS = (30.0, 50.0, 60.0, 70.0, 80.0, 100.0, 120.0)
TICK_S = 0.005


@dataclass(frozen=True)
class Load:
    """What to generate."""

    host: str
    port: int
    devices: int
    rate: float
    """Readings per second per device."""
    duration_s: float
    prefix: str = "sim"
    processes: int = 2
    health_interval_s: float = 30.0


class Device:
    """One device's MQTT client and sequence numbers."""

    def __init__(self, device_id: str, host: str, port: int) -> None:
        self.device_id = device_id
        self.seq = 0
        self.readings_topic = device_topic(device_id, MessageKind.READINGS)
        self.health_topic = device_topic(device_id, MessageKind.HEALTH)
        status_topic = device_topic(device_id, MessageKind.STATUS)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.will_set(status_topic, self.status(DeviceState.OFFLINE), qos=1, retain=True)
        self.connected = False
        self.fd = -1
        self.acknowledged = 0
        self.unacknowledged = 0
        self.disconnects = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.status_topic = status_topic
        self._host, self._port = host, port

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def status(self, state: DeviceState) -> bytes:
        return encode(
            StatusMessage(
                device_id=self.device_id,
                seq=self._next_seq(),
                timestamp=datetime.now(UTC),
                state=state,
                reason="connected" if state == DeviceState.ONLINE else "connection_lost",
                agent_version="bench",
                profile="simulated",
                model=MODEL,
            )
        )

    def connect(self) -> None:
        """Open the connection (CONNECT is sent; CONNACK arrives through the loop)."""
        self.client.connect(self._host, self._port, keepalive=60)

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        self.connected = True
        self.publish(self.status_topic, self.status(DeviceState.ONLINE), retain=True)

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        self.connected = False
        self.disconnects += 1

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *args: Any) -> None:
        self.acknowledged += 1
        self.unacknowledged -= 1

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1; counted until its PUBACK comes."""
        self.unacknowledged += 1
        self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_reading(self, value: float, x: float) -> None:
        """One speed-limit reading, QoS 1."""
        reading = Reading(
            device_id=self.device_id,
            seq=self._next_seq(),
            timestamp=datetime.now(UTC),
            sign_type=SignType.SPEED_LIMIT,
            value=value,
            unit="km/h",
            confidence=0.9,
            bbox=(x, 100.0, x + 40.0, 140.0),
            track_id=self.seq,
            frames_seen=5,
            model=MODEL,
        )
        self.publish(self.readings_topic, encode(reading))

    def publish_health(self, uptime_s: float) -> None:
        """A health report, QoS 1."""
        report = HealthReport(
            device_id=self.device_id,
            seq=self._next_seq(),
            timestamp=datetime.now(UTC),
            agent_version="bench",
            model=MODEL,
            uptime_s=uptime_s,
            fps=10.0,
            cpu_percent=20.0,
            rss_mb=100.0,
            disk_free_mb=1000.0,
            camera_state=CameraState.OK,
            outbox_depth=0,
            outbox_dropped=0,
        )
        self.publish(self.health_topic, encode(report))


class Shard:
    """The devices of one process, driven by one epoll loop."""

    def __init__(self, load: Load, first: int, count: int) -> None:
        self.load = load
        self.devices = [
            Device(f"{load.prefix}-{i:05d}", load.host, load.port)
            for i in range(first, first + count)
        ]
        self.selector = selectors.DefaultSelector()
        self.devices_writing: set[Device] = set()
        self.sent = 0

    def _pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            device: Device = key.data
            if device.client.loop_read(100) != mqtt.MQTT_ERR_SUCCESS:
                self._reconnect(device)
        # paho writes at once from publish(); only a full socket buffer leaves bytes behind.
        for device in list(self.devices_writing):
            if device.client.want_write():
                device.client.loop_write()
            if not device.client.want_write():
                self.devices_writing.discard(device)

    def _reconnect(self, device: Device) -> None:
        # By descriptor number: paho has closed the socket object already.
        if device.fd in self.selector.get_map():
            self.selector.unregister(device.fd)
        try:
            device.client.reconnect()
        except OSError as e:
            print(f"{device.device_id}: reconnect failed ({e}); retried in a second", flush=True)
            return
        self._register(device)

    def _register(self, device: Device) -> None:
        sock = device.client.socket()
        assert sock is not None, "paho has no socket right after connect"
        device.fd = sock.fileno()
        self.selector.register(device.fd, selectors.EVENT_READ, device)

    def connect(self, timeout: float = 60.0) -> int:
        """Connect every device; the number connected."""
        for device in self.devices:
            device.connect()
            self.devices_writing.add(device)
            self._register(device)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(d.connected for d in self.devices):
            self._pump(0.05)
        return sum(d.connected for d in self.devices)

    def run(self, started: float) -> None:
        """Publish for the load's duration from `started`, spread evenly over devices."""
        load = self.load
        count = len(self.devices)
        per_second = load.rate * count
        next_device = 0
        next_health = started + load.health_interval_s
        next_misc = started + 1.0
        end = started + load.duration_s
        while (now := time.monotonic()) < end:
            due = int((now - started) * per_second) - self.sent
            for _ in range(max(due, 0)):
                device = self.devices[next_device]
                device.publish_reading(SPEEDS[self.sent % len(SPEEDS)], float(self.sent % 500))
                if device.client.want_write():
                    self.devices_writing.add(device)
                self.sent += 1
                next_device = (next_device + 1) % count
            if now >= next_health:
                next_health += load.health_interval_s
                for device in self.devices:
                    device.publish_health(now - started)
                    if device.client.want_write():
                        self.devices_writing.add(device)
            if now >= next_misc:
                next_misc += 1.0
                for device in self.devices:
                    if device.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                        self._reconnect(device)
            self._pump(TICK_S)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait for every PUBACK; whether all came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(d.unacknowledged for d in self.devices):
                return True
            self._pump(0.05)
        return False

    def close(self) -> None:
        """Say offline (retained) and disconnect cleanly."""
        for device in self.devices:
            device.publish(device.status_topic, device.status(DeviceState.OFFLINE), retain=True)
            self.devices_writing.add(device)
        self.settle(10.0)
        for device in self.devices:
            device.client.disconnect()
            device.client.loop_write()


def _shard_main(load: Load, first: int, count: int, go: Any, results: Any) -> None:
    shard = Shard(load, first, count)
    connected = shard.connect()
    results.put(("connected", connected))
    start_at = go.get()
    time.sleep(max(start_at - time.time(), 0.0))
    started = time.monotonic()
    shard.run(started)
    publishing_s = time.monotonic() - started
    settled = shard.settle()
    summary = {
        "readings_sent": shard.sent,
        "acknowledged": sum(d.acknowledged for d in shard.devices),
        "disconnects": sum(d.disconnects for d in shard.devices),
        "all_acknowledged": settled,
        "publishing_s": publishing_s,
    }
    shard.close()
    results.put(("done", summary))


def generate(load: Load) -> dict[str, Any]:
    """Connect every device, publish for the duration, wait for the acks; the totals."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    gos = []
    processes = []
    per = -(-load.devices // load.processes)
    for first in range(0, load.devices, per):
        go = context.Queue()
        count = min(per, load.devices - first)
        process = context.Process(
            target=_shard_main, args=(load, first, count, go, results), daemon=True
        )
        process.start()
        processes.append(process)
        gos.append(go)
    connected = 0
    for _ in processes:
        kind, value = _get(results, processes)
        assert kind == "connected"
        connected += int(value)
    start_at = time.time() + 0.5  # one wall-clock start for every shard
    for go in gos:
        go.put(start_at)
    summaries = [_get(results, processes)[1] for _ in processes]
    for process in processes:
        process.join(30)
    return {
        "devices": load.devices,
        "connected": connected,
        "readings_sent": sum(s["readings_sent"] for s in summaries),
        "acknowledged": sum(s["acknowledged"] for s in summaries),
        "disconnects": sum(s["disconnects"] for s in summaries),
        "all_acknowledged": all(s["all_acknowledged"] for s in summaries),
        "publishing_s": max(s["publishing_s"] for s in summaries),
        "start_at": start_at,
    }


def _get(results: Any, processes: list[Any]) -> tuple[str, Any]:
    while True:
        try:
            item: tuple[str, Any] = results.get(timeout=1.0)
            return item
        except queue.Empty:
            if not all(p.is_alive() for p in processes):
                raise RuntimeError("a load generator process died") from None
