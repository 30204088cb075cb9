"""The probation of a freshly activated model: restarts and health watched, a crash loop or a
regression rolls back to the previous slot.

The verdict is state.probation_verdict (pure); this module reads the slot record and the health
reports, and writes the outcome. The shadow reading's numbers (the previous model reading
sampled frames beside the new one, shadow_runner.py) arrive in the health report's `shadow`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_agent.ota.slots import Slots
from edge_agent.ota.state import (
    HealthNumbers,
    Probation,
    ProbationLimits,
    ProbationVerdict,
    ShadowNumbers,
    probation_verdict,
)
from edge_agent.profile_ota import OtaConfig
from fleet_protocol.messages import CameraState, HealthReport, ModelRef, PipelineStage


def limits(config: OtaConfig) -> ProbationLimits:
    """The profile's probation thresholds."""
    return ProbationLimits(
        window_s=config.probation_s,
        max_restarts=config.probation_max_restarts,
        min_fps_ratio=config.probation_min_fps_ratio,
        max_p95_ratio=config.probation_max_p95_ratio,
        min_shadow_tracks=config.probation_min_shadow_tracks,
        min_shadow_agreement=config.probation_min_shadow_agreement,
    )


def health_numbers(
    report: HealthReport | None, model: ModelRef | None = None
) -> HealthNumbers | None:
    """What a probation compares, from a health report; None when the report says nothing
    about the model: none yet, one of another model than `model`, or a camera not delivering
    (fewer frames then are the camera's doing, not the model's)."""
    if report is None or report.camera_state is not CameraState.OK:
        return None
    if model is not None and report.model != model:
        return None
    detect = report.stage_latency_ms.get(PipelineStage.DETECT)
    shadow = report.shadow
    return HealthNumbers(
        fps=report.fps,
        detect_p95_ms=detect.p95_ms if detect else None,
        shadow=ShadowNumbers(shadow.frames_compared, shadow.tracks_compared, shadow.tracks_agreeing)
        if shadow is not None
        else None,
    )


class ProbationWatch:
    """Judges the active slot's probation from its record and the latest health numbers."""

    def __init__(
        self, slots: Slots, config: ProbationLimits, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.slots = slots
        self.limits = config
        self.clock = clock

    def check(self, now: HealthNumbers | None) -> ProbationVerdict | None:
        """The verdict (None: no probation running); a rollback or a pass is recorded."""
        record = self.slots.read_record()
        if record is None or record.probation_started is None:
            return None
        verdict = probation_verdict(
            elapsed_s=max(0.0, self.clock() - record.probation_started),
            restarts=record.probation_restarts,
            before=record.baseline,
            now=now,
            limits=self.limits,
        )
        if verdict.outcome is Probation.ROLL_BACK:
            self.slots.roll_back()
        elif verdict.outcome is Probation.PASSED:
            self.slots.end_probation()
        return verdict
