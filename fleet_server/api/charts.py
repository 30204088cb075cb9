"""Health charts, pure: a device's samples (time, value) -> the points of an SVG polyline.

The device page draws them server-side (``templates/macros.html``), so a chart needs no
JavaScript library and no CDN. Time runs along x, so a gap in the reports shows as a gap in
the line's spacing; a sample without the value (no temperature sensor, no latency yet) is left
out rather than drawn as zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fleet_server.models import HealthSample
from fleet_server.rollouts.evidence import latency_p95_ms

WIDTH = 480
HEIGHT = 120
PAD = 8
"""Pixels kept free inside the box, so the extremes and a single point are not clipped."""


@dataclass(frozen=True)
class Chart:
    """One chart: what it shows and where its points lie in a WIDTH x HEIGHT box."""

    label: str
    unit: str
    points: tuple[tuple[float, float], ...]
    low: float
    high: float
    latest: float | None
    start: datetime | None
    end: datetime | None
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def polyline(self) -> str:
        """The points as an SVG ``points`` attribute."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


def chart(label: str, unit: str, series: Sequence[tuple[datetime, float | None]]) -> Chart:
    """The chart of `series` (oldest first); values that are None are left out."""
    known = [(at, float(v)) for at, v in series if v is not None]
    if not known:
        return Chart(label, unit, (), 0.0, 0.0, None, None, None)
    values = [v for _, v in known]
    # From zero where every value is positive: a drop from 30 to 28 fps is not a cliff.
    low, high = min(0.0, min(values)), max(values)
    span = high - low or 1.0
    start, end = known[0][0], known[-1][0]
    seconds = (end - start).total_seconds()
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    points = tuple(
        (
            PAD + ((at - start).total_seconds() / seconds * inner_w if seconds else inner_w / 2),
            PAD + inner_h - (v - low) / span * inner_h,
        )
        for at, v in known
    )
    return Chart(label, unit, points, low, high, values[-1], start, end)


HEALTH_CHARTS: tuple[tuple[str, str, Callable[[HealthSample], float | None]], ...] = (
    ("frames per second", "fps", lambda s: s.fps),
    ("CPU", "%", lambda s: s.cpu_percent),
    ("memory", "MiB", lambda s: s.rss_mb),
    ("temperature", "°C", lambda s: s.temperature_c),
    ("outbox depth", "messages", lambda s: s.outbox_depth),
    ("inference latency p95", "ms", latency_p95_ms),
)
"""What the device page charts, in order: label, unit, and the value of a sample."""


def health_charts(samples: Sequence[HealthSample]) -> list[Chart]:
    """The device page's charts of `samples` (oldest first)."""
    return [
        chart(label, unit, [(s.observed_at, value(s)) for s in samples])
        for label, unit, value in HEALTH_CHARTS
    ]
