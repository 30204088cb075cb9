"""Gate evidence from stored rows, pure: health samples and reading counts -> windows.

How each number is made (the gates' inputs are documented in `gates`):

- ``HealthWindow.hours``: the span of the window's samples (newest minus oldest observed_at);
  ``fps``: their mean; ``restarts``: how often uptime_s fell from one sample to the next;
  ``latency_p95_ms``: the mean of ``stage_latency_ms['detect']['p95_ms']`` where reported.
- ``QualityWindow.driving_hours``: the sum of the gaps between consecutive samples whose earlier
  sample says ``camera_state`` ok, each gap counted up to `max_gap_s` (a longer one means the
  device was off or offline, not driving); readings, mean confidence and disagreements are the
  window's readings as the database counts them.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from fleet_protocol.messages import CameraState, PipelineStage
from fleet_server.crud.rollouts import ReadingStats
from fleet_server.models import HealthSample
from fleet_server.rollouts.gates import HealthWindow, QualityWindow, ShadowSample

LATENCY_STAGE = PipelineStage.DETECT.value
"""The pipeline stage whose p95 latency the health gate compares: inference, the model's part."""


def latency_p95_ms(sample: HealthSample) -> float | None:
    """The sample's p95 latency of `LATENCY_STAGE`, where it reported one."""
    stats = sample.stage_latency_ms.get(LATENCY_STAGE)
    return float(stats["p95_ms"]) if isinstance(stats, dict) and "p95_ms" in stats else None


def health_window(samples: Sequence[HealthSample]) -> HealthWindow | None:
    """The window's health; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples, key=lambda s: (s.observed_at, s.seq))
    span = (ordered[-1].observed_at - ordered[0].observed_at).total_seconds() / 3600
    restarts = sum(
        1 for before, after in itertools.pairwise(ordered) if after.uptime_s < before.uptime_s
    )
    latencies = [p95 for s in ordered if (p95 := latency_p95_ms(s)) is not None]
    return HealthWindow(
        hours=max(span, 0.0),
        fps=statistics.fmean(s.fps for s in ordered),
        restarts=restarts,
        latency_p95_ms=statistics.fmean(latencies) if latencies else None,
    )


def driving_hours(samples: Sequence[HealthSample], *, max_gap_s: float) -> float:
    """Hours with the camera running, from consecutive samples (see the module docstring)."""
    ordered = sorted(samples, key=lambda s: (s.observed_at, s.seq))
    seconds = 0.0
    for before, after in itertools.pairwise(ordered):
        if before.camera_state == CameraState.OK.value:
            gap = (after.observed_at - before.observed_at).total_seconds()
            seconds += min(max(gap, 0.0), max_gap_s)
    return seconds / 3600


def quality_window(
    samples: Sequence[HealthSample], readings: ReadingStats, *, max_gap_s: float
) -> QualityWindow | None:
    """The window's reading quality; None when the device sent neither health nor readings."""
    if not samples and readings.count == 0:
        return None
    return QualityWindow(
        driving_hours=driving_hours(samples, max_gap_s=max_gap_s),
        readings=readings.count,
        mean_confidence=readings.mean_confidence,
        disagreements=min(readings.disagreements, readings.count),
    )


def shadow_sample(sample: HealthSample | None) -> ShadowSample | None:
    """The shadow numbers of a health sample (cumulative over the probation); None without."""
    if sample is None or sample.shadow_tracks_compared is None:
        return None
    compared = sample.shadow_tracks_compared
    return ShadowSample(
        device_id=sample.device_id,
        tracks_compared=compared,
        tracks_agreeing=min(sample.shadow_tracks_agreeing or 0, compared),
    )
