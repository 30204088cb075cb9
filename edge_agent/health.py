"""What the agent knows about itself: throughput, stage latencies, CPU, memory, heat, disk.

Stage latencies are kept per reporting interval and summarised as p50/p95; CPU use comes from the
process's own CPU time, memory from ``/proc/self/statm``, temperature from the hottest thermal
zone the OS exposes (None where there is none), disk from the outbox's filesystem.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet_protocol.messages import LatencyStats, PipelineStage

THERMAL_ZONES = Path("/sys/class/thermal")


@dataclass(frozen=True)
class HealthSnapshot:
    """The measurements of one reporting interval."""

    fps: float
    stage_latency_ms: dict[PipelineStage, LatencyStats]
    cpu_percent: float
    rss_mb: float
    temperature_c: float | None
    disk_free_mb: float
    uptime_s: float
    frames: int


def rss_mb() -> float:
    """Resident memory of this process, MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def temperature_c(zones: Path = THERMAL_ZONES) -> float | None:
    """The hottest thermal zone in degrees C, or None where the OS exposes none."""
    readings = []
    for zone in zones.glob("thermal_zone*/temp"):
        try:
            readings.append(int(zone.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    return max(readings) if readings else None


class HealthMonitor:
    """Collects timings from the pipeline; `snapshot` summarises and restarts the interval."""

    def __init__(self, disk_path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._disk_path = disk_path
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._interval_start = self._started
        self._cpu_start = time.process_time()
        self._frames = 0
        self._latency: dict[PipelineStage, list[float]] = defaultdict(list)

    def frame(self, stage_seconds: dict[PipelineStage, float]) -> None:
        """Record one processed frame and how long each stage took."""
        with self._lock:
            self._frames += 1
            for stage, seconds in stage_seconds.items():
                self._latency[stage].append(seconds * 1000)

    def snapshot(self) -> HealthSnapshot:
        """The interval since the last snapshot, summarised; a new interval starts."""
        now, cpu = self._clock(), time.process_time()
        with self._lock:
            elapsed = max(now - self._interval_start, 1e-9)
            frames, latency = self._frames, dict(self._latency)
            cpu_used = cpu - self._cpu_start
            self._interval_start, self._cpu_start, self._frames = now, cpu, 0
            self._latency = defaultdict(list)
        stats = {
            stage: LatencyStats(
                p50_ms=float(np.percentile(values, 50)), p95_ms=float(np.percentile(values, 95))
            )
            for stage, values in latency.items()
            if values
        }
        try:
            free = shutil.disk_usage(self._disk_path).free / 2**20
        except OSError:
            free = 0.0
        return HealthSnapshot(
            fps=frames / elapsed,
            stage_latency_ms=stats,
            cpu_percent=100 * max(cpu_used, 0.0) / elapsed,
            rss_mb=rss_mb(),
            temperature_c=temperature_c(),
            disk_free_mb=free,
            uptime_s=now - self._started,
            frames=frames,
        )
