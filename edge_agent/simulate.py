"""``roadsign-agent simulate``: many virtual devices in one process, for fleet tests and demos.

Each virtual device runs the agent's real outbox, MQTT link (birth, last will, QoS 1, resend) and
health code under its own device id; only the camera and the model are replaced by a synthetic
source of readings at a set rate. The outboxes use NORMAL sync (one shared disk cannot fsync a
thousand devices' messages); everything else is what a device does.

A device holds about seven file descriptors (its outbox's three SQLite files, its socket, paho's
wake-up pipe) and paho waits on them with select(), which cannot watch a descriptor past 1023:
so one process runs at most `devices_per_process` devices and a larger fleet is split across
processes (which also spreads it over the cores).

All that costs ~0.8 ms of CPU a reading, too much to offer a 2-core server 5,000 readings/s
while it also runs the server: the ingest benchmark drives its devices with the leaner
`bench/fleet_load.py` (same connections and messages, no disk outbox).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_agent.agent import OutboxSink
from edge_agent.exceptions import AgentError
from edge_agent.health import HealthMonitor
from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.outbox import Outbox
from fleet_protocol.codec import encode
from fleet_protocol.messages import (
    CameraState,
    DeviceState,
    HealthReport,
    ModelRef,
    PipelineStage,
    Reading,
    StatusMessage,
    StatusReason,
)
from fleet_protocol.taxonomy import SignType
from fleet_protocol.topics import MessageKind


class StopSignal(Protocol):
    """A thread's or a process's event: set when the simulation should end early."""

    def is_set(self) -> bool:
        """Whether to stop."""
        ...


class SimulationError(AgentError):
    """The simulated fleet could not run."""


SIM_MODEL = ModelRef(version="sim-1", sha256="0" * 64)
SPEEDS = (30, 50, 60, 70, 80, 100, 120)


@dataclass(frozen=True)
class SimulationSettings:
    """What to simulate."""

    devices: int
    broker_url: str
    rate: float = 1.0
    """Readings per second per device."""
    duration_s: float = 10.0
    health_interval_s: float = 5.0
    outbox_dir: Path = Path(".cache/simulate")
    prefix: str = "sim"
    username: str | None = None
    password: str | None = None
    first_index: int = 0
    """Index of this process's first device (device ids are unique across processes)."""
    devices_per_process: int = 100


class VirtualDevice:
    """One simulated device: its own outbox, link and health, a synthetic sign source."""

    def __init__(self, index: int, settings: SimulationSettings) -> None:
        self.device_id = f"{settings.prefix}-{index:05d}"
        self.settings = settings
        self.outbox = Outbox(
            settings.outbox_dir / f"{self.device_id}.sqlite3",
            max_messages=100_000,
            max_bytes=64 * 2**20,
            durable=False,
        )
        self.link = MqttLink(
            LinkSettings(
                url=settings.broker_url,
                device_id=self.device_id,
                username=settings.username,
                password=settings.password,
                reconnect_max_s=5,
            ),
            self.outbox,
            self._status,
        )
        self.sink = OutboxSink(self.outbox, self.link, self.device_id)
        self.health = HealthMonitor(settings.outbox_dir)
        self.rng = np.random.default_rng(index)
        self.sent = 0

    def _status(self, reason: StatusReason) -> bytes:
        state = DeviceState.ONLINE if reason == "connected" else DeviceState.OFFLINE
        return encode(
            StatusMessage(
                device_id=self.device_id,
                seq=self.outbox.next_seq(),
                timestamp=datetime.now(UTC),
                state=state,
                reason=reason,
                agent_version="simulator",
                profile="simulated",
                model=SIM_MODEL,
            )
        )

    def reading(self) -> Reading:
        """A plausible speed-limit reading."""
        x = float(self.rng.uniform(300, 560))
        size = float(self.rng.uniform(20, 80))
        value = int(self.rng.choice(SPEEDS))
        return Reading(
            device_id=self.device_id,
            seq=self.sink.next_seq(),
            timestamp=datetime.now(UTC),
            sign_type=SignType.SPEED_LIMIT,
            value=float(value),
            unit="km/h",
            confidence=float(self.rng.uniform(0.6, 0.99)),
            bbox=(x, 100.0, x + size, 100.0 + size),
            track_id=self.sent,
            frames_seen=int(self.rng.integers(3, 30)),
            model=SIM_MODEL,
        )

    def health_report(self) -> HealthReport:
        """A health report from the real monitor."""
        snap = self.health.snapshot()
        return HealthReport(
            device_id=self.device_id,
            seq=self.sink.next_seq(),
            timestamp=datetime.now(UTC),
            agent_version="simulator",
            model=SIM_MODEL,
            uptime_s=snap.uptime_s,
            fps=snap.fps,
            stage_latency_ms=snap.stage_latency_ms,
            cpu_percent=snap.cpu_percent,
            rss_mb=snap.rss_mb,
            disk_free_mb=snap.disk_free_mb,
            camera_state=CameraState.OK,
            outbox_depth=self.outbox.depth,
            outbox_dropped=self.outbox.dropped,
        )


def simulate(settings: SimulationSettings, stop: StopSignal | None = None) -> dict[str, object]:
    """Run the devices for the duration (or until `stop`); return what was sent and delivered."""
    if settings.devices > settings.devices_per_process:
        return _simulate_sharded(settings, stop)
    stop = stop or threading.Event()
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    first = settings.first_index
    devices = [VirtualDevice(first + i, settings) for i in range(settings.devices)]
    for device in devices:
        device.link.start()
    started = time.monotonic()
    period = 1.0 / settings.rate if settings.rate > 0 else float("inf")
    next_reading = [
        started + (i / max(settings.devices, 1)) * period for i in range(settings.devices)
    ]
    next_health = started + settings.health_interval_s
    while not stop.is_set() and time.monotonic() - started < settings.duration_s:
        now = time.monotonic()
        for i, device in enumerate(devices):
            while next_reading[i] <= now:
                device.sink.emit(MessageKind.READINGS, device.reading())
                device.health.frame({PipelineStage.TOTAL: 0.0})
                device.sent += 1
                next_reading[i] += period
        if now >= next_health:
            next_health += settings.health_interval_s
            for device in devices:
                device.sink.emit(MessageKind.HEALTH, device.health_report())
        time.sleep(0.002)
    deadline = time.monotonic() + 30  # one deadline for the fleet, not 30 s per device
    drained = all(d.link.wait_drained(max(deadline - time.monotonic(), 0.0)) for d in devices)
    for device in devices:
        device.link.stop(timeout=1 if drained else 0.1)
        device.outbox.close()
    return {
        "devices": settings.devices,
        "readings_sent": sum(d.sent for d in devices),
        "all_delivered": drained,
        "acknowledged": sum(d.link.stats.acknowledged for d in devices),
        "never_connected": sum(1 for d in devices if d.link.stats.connects == 0),
    }


def _shard(settings: SimulationSettings, stop: StopSignal, results: Any) -> None:
    results.put(simulate(settings, stop))


def _simulate_sharded(settings: SimulationSettings, stop: StopSignal | None) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")  # no forked copies of paho's threads
    shared_stop, results = context.Event(), context.Queue()
    shards = []
    per = settings.devices_per_process
    for first in range(0, settings.devices, per):
        shard = replace(
            settings,
            devices=min(per, settings.devices - first),
            first_index=settings.first_index + first,
        )
        process = context.Process(target=_shard, args=(shard, shared_stop, results), daemon=True)
        process.start()
        shards.append(process)
    summaries: list[dict[str, object]] = []
    while len(summaries) < len(shards):
        if stop is not None and stop.is_set():
            shared_stop.set()
        try:
            summaries.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in shards) and results.empty():
                raise SimulationError(
                    f"{len(shards) - len(summaries)} of {len(shards)} simulator processes died"
                ) from None
    for process in shards:
        process.join()
    return {
        "devices": sum(int(str(s["devices"])) for s in summaries),
        "readings_sent": sum(int(str(s["readings_sent"])) for s in summaries),
        "all_delivered": all(bool(s["all_delivered"]) for s in summaries),
        "acknowledged": sum(int(str(s["acknowledged"])) for s in summaries),
        "never_connected": sum(int(str(s["never_connected"])) for s in summaries),
        "processes": len(shards),
    }
