"""Rollout gates, pure: measured values of one stage's devices plus thresholds -> a verdict.

Four gates decide whether a stage of a rollout may go on:

- **install**: the share of the stage's devices whose install failed (failed, rolled back by
  the device itself, or timed out) against those it was sent to;
- **health**: the same devices after the install against before it: fps drop, restarts per
  hour, p95 inference latency;
- **reading quality**: the same devices after against before: readings per hour of driving,
  mean confidence, share of readings where the classifier and OCR disagree;
- **shadow agreement**: the share of tracks on which the old and the new model agree, where
  the agent ran the old one beside the new (optional: without such data the gate does not
  apply, unless the policy requires it).

Comparisons are paired: each device is compared with itself, then the per-device changes are
aggregated, so a stage of slow devices is not judged against a fleet of fast ones. Ratios
aggregate by median (one noisy device must not fail a stage); restarts by mean (one device in a
crash loop must). A device without enough data in either window does not count; too few
devices with data makes the gate wait, saying what is missing, instead of passing on nothing.

Nothing here reads a clock or does I/O; the rollout driver gathers the numbers.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet_protocol.config_files import StrictConfigModel
from fleet_protocol.topics import DEVICE_ID_PATTERN


class GateKind(StrEnum):
    """Which gate a verdict is about."""

    INSTALL = "install"
    HEALTH = "health"
    READING_QUALITY = "reading_quality"
    SHADOW = "shadow"


class GateStatus(StrEnum):
    """The outcome of a gate (or of one metric of it)."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    WAITING = "waiting"
    NOT_APPLICABLE = "not_applicable"
    """No data of this kind exists for the stage and the policy does not require it."""


PASSING = frozenset({GateStatus.PASS, GateStatus.NOT_APPLICABLE})
"""Statuses that let a stage soak and advance."""


class GatePolicy(StrictConfigModel):
    """Thresholds and minimum sample sizes of a rollout's gates (part of a rollout's body)."""

    max_install_failure_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Highest share of a stage's devices whose install may fail (failed, rolled "
        "back by the device, or timed out) for the stage to go on.",
    )
    min_finished_installs: int = Field(
        default=3,
        ge=1,
        description="Installs that must have finished (succeeded or failed) before the install "
        "gate can pass; a stage with fewer devices needs all of them.",
    )
    require_probation_passed: bool = Field(
        default=False,
        description="Count an install as succeeded only once the device's probation passed "
        "(probation_passed), not as soon as the new model is active.",
    )
    install_timeout_s: float = Field(
        default=6 * 3600,
        gt=0,
        le=30 * 86400,
        description="Seconds a device of a stage has to report its install active; a device "
        "still silent or in progress then counts as failed (timed out). Until then an offline "
        "device keeps the stage waiting.",
    )
    renudge_interval_s: float = Field(
        default=15 * 60,
        gt=0,
        description="Seconds between OTA nudges to a device of the running stage that has not "
        "finished its install yet (a nudge is lost while a device is offline).",
    )
    min_devices_with_data: int = Field(
        default=3,
        ge=1,
        description="Devices that need data both before and after the install for the health "
        "and reading-quality gates to decide; a stage with fewer installed devices needs all.",
    )
    min_window_hours: float = Field(
        default=0.5,
        gt=0,
        description="Hours a device must have reported health in a window (before or after) "
        "for that window to count.",
    )
    max_fps_drop_ratio: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Highest median relative drop of frames per second after the install "
        "(0.10: after may be 10% below before).",
    )
    max_restarts_per_hour_increase: float = Field(
        default=0.5,
        ge=0,
        description="Highest mean increase of agent restarts per hour after the install.",
    )
    max_latency_p95_increase_ratio: float = Field(
        default=0.25,
        ge=0,
        description="Highest median relative increase of p95 inference latency after the "
        "install (0.25: after may be 25% above before).",
    )
    min_driving_hours: float = Field(
        default=0.25,
        gt=0,
        description="Hours of driving (or of a roadside camera running) a device needs in a "
        "window for its readings to count.",
    )
    min_readings: int = Field(
        default=20,
        ge=1,
        description="Readings a device needs in a window for its confidence and disagreement "
        "share to count.",
    )
    max_readings_per_hour_drop_ratio: float = Field(
        default=0.20,
        ge=0,
        le=1,
        description="Highest median relative drop of readings per hour of driving after the "
        "install (a detector that misses signs reads fewer).",
    )
    max_confidence_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Highest median drop of mean reading confidence after the install "
        "(absolute, confidence is 0..1).",
    )
    max_disagreement_increase: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Highest median increase of the share of readings on which the classifier "
        "and OCR disagree (absolute share).",
    )
    min_shadow_tracks: int = Field(
        default=100,
        ge=1,
        description="Tracks compared in shadow mode, over the stage's devices, before the "
        "shadow gate can decide.",
    )
    min_shadow_agreement: float = Field(
        default=0.90,
        ge=0,
        le=1,
        description="Lowest share of shadow-compared tracks on which old and new model agree.",
    )
    require_shadow: bool = Field(
        default=False,
        description="Make the shadow gate wait for shadow data instead of not applying when "
        "no device of the stage sends any.",
    )


class _Evidence(BaseModel):
    """Base of the gates' inputs: strict, closed, immutable, finite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class HealthWindow(_Evidence):
    """One device's health over one window (before or after its install), from its
    HealthReports: the driver averages them over the window."""

    hours: float = Field(ge=0, description="Hours the device reported health in the window.")
    fps: float | None = Field(default=None, ge=0, description="Mean of HealthReport.fps.")
    restarts: int = Field(
        default=0, ge=0, description="Agent restarts in the window (HealthReport.uptime_s fell)."
    )
    latency_p95_ms: float | None = Field(
        default=None, ge=0, description="Mean of stage_latency_ms['detect'].p95_ms."
    )


class HealthPair(_Evidence):
    """One device's health before and after its install; a missing window is None."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device.")
    before: HealthWindow | None = Field(default=None, description="Before the install.")
    after: HealthWindow | None = Field(default=None, description="Since the install.")


class QualityWindow(_Evidence):
    """One device's readings over one window (before or after its install)."""

    driving_hours: float = Field(
        ge=0, description="Hours on the road with the camera running (camera_state ok)."
    )
    readings: int = Field(default=0, ge=0, description="Readings sent in the window.")
    mean_confidence: float | None = Field(
        default=None, ge=0, le=1, description="Mean Reading.confidence of those readings."
    )
    disagreements: int = Field(
        default=0, ge=0, description="Readings with sources_disagree (classifier vs OCR)."
    )

    @model_validator(mode="after")
    def _disagreements_are_readings(self) -> Self:
        if self.disagreements > self.readings:
            raise ValueError(
                f"{self.disagreements} disagreements among only {self.readings} readings"
            )
        return self


class QualityPair(_Evidence):
    """One device's reading quality before and after its install; a missing window is None."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device.")
    before: QualityWindow | None = Field(default=None, description="Before the install.")
    after: QualityWindow | None = Field(default=None, description="Since the install.")


class ShadowSample(_Evidence):
    """One device's shadow comparison since its install: its latest HealthReport.shadow
    (cumulative over the probation: tracks_compared, tracks_agreeing)."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device.")
    tracks_compared: int = Field(default=0, ge=0, description="Tracks both models read.")
    tracks_agreeing: int = Field(default=0, ge=0, description="Of those, read alike.")

    @model_validator(mode="after")
    def _agreed_are_compared(self) -> Self:
        if self.tracks_agreeing > self.tracks_compared:
            raise ValueError(
                f"{self.tracks_agreeing} tracks agreed of only {self.tracks_compared} compared"
            )
        return self


class MetricCheck(_Evidence):
    """One metric of a gate: aggregated before and after, the change judged, the threshold."""

    metric: str = Field(description="Name of the metric, e.g. fps_drop_ratio.")
    status: GateStatus = Field(description="Outcome for this metric.")
    before: float | None = Field(default=None, description="Median before (None: unpaired).")
    after: float | None = Field(default=None, description="Median after.")
    value: float | None = Field(default=None, description="The aggregated change judged.")
    threshold: float = Field(description="Limit the value is judged against.")
    devices: int = Field(ge=0, description="Devices that counted for this metric.")
    reason: str = Field(default="", description="Why, when it did not pass.")


class GateVerdict(_Evidence):
    """A gate's outcome, with the metrics behind it."""

    gate: GateKind = Field(description="Which gate.")
    status: GateStatus = Field(description="Outcome.")
    reason: str = Field(default="", description="Why it failed or waits; empty on pass.")
    checks: tuple[MetricCheck, ...] = Field(default=(), description="Each metric judged.")

    @property
    def passing(self) -> bool:
        """Whether this verdict lets the stage soak and advance."""
        return self.status in PASSING


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _required(policy_minimum: int, population: int) -> int:
    """Devices needed to decide: the policy's minimum, or all of a smaller stage."""
    return max(1, min(policy_minimum, population))


def _check(
    metric: str,
    pairs: Sequence[tuple[float, float]],
    change: Callable[[float, float], float],
    threshold: float,
    missing: str,
    *,
    required: int,
    aggregate: Callable[[Iterable[float]], float] = statistics.median,
) -> MetricCheck:
    """Judge one paired metric: `pairs` are (before, after) of each device with data."""
    if len(pairs) < required:
        return MetricCheck(
            metric=metric,
            status=GateStatus.WAITING,
            threshold=threshold,
            devices=len(pairs),
            reason=f"{metric}: {len(pairs)} of {required} devices needed have {missing}",
        )
    before = statistics.median(b for b, _ in pairs)
    after = statistics.median(a for _, a in pairs)
    value = aggregate(change(b, a) for b, a in pairs)
    bad = value > threshold
    reason = ""
    if bad:
        reason = (
            f"{metric} {_fmt(value)} > threshold {_fmt(threshold)} "
            f"(before {_fmt(before)}, after {_fmt(after)}, {len(pairs)} devices)"
        )
    return MetricCheck(
        metric=metric,
        status=GateStatus.FAIL if bad else GateStatus.PASS,
        before=before,
        after=after,
        value=value,
        threshold=threshold,
        devices=len(pairs),
        reason=reason,
    )


def _relative_drop(before: float, after: float) -> float:
    return 1 - after / before


def _relative_rise(before: float, after: float) -> float:
    return after / before - 1


def _rise(before: float, after: float) -> float:
    return after - before


def _drop(before: float, after: float) -> float:
    return before - after


def _verdict(gate: GateKind, checks: Sequence[MetricCheck]) -> GateVerdict:
    """A gate fails if any metric fails, else waits if any waits, else passes."""
    for status in (GateStatus.FAIL, GateStatus.WAITING):
        reasons = [c.reason for c in checks if c.status is status]
        if reasons:
            return GateVerdict(
                gate=gate,
                status=status,
                reason=f"{gate}: " + "; ".join(reasons),
                checks=tuple(checks),
            )
    return GateVerdict(gate=gate, status=GateStatus.PASS, checks=tuple(checks))


def install_gate(*, attempted: int, succeeded: int, failed: int, policy: GatePolicy) -> GateVerdict:
    """Judge a stage's installs: `attempted` devices were assigned, so many finished each way.

    Fails as soon as the failures alone exceed the allowed share of the stage (more successes
    cannot lower it); passes once enough installs finished within it.
    """
    if attempted <= 0 or succeeded < 0 or failed < 0 or succeeded + failed > attempted:
        raise ValueError(f"impossible install counts {attempted=} {succeeded=} {failed=}")
    rate = failed / attempted
    finished = succeeded + failed
    required = _required(policy.min_finished_installs, attempted)
    threshold = policy.max_install_failure_rate
    status, reason = GateStatus.PASS, ""
    if rate > threshold:
        status = GateStatus.FAIL
        reason = (
            f"install_failure_rate {_fmt(rate)} > threshold {_fmt(threshold)} "
            f"({failed} of {attempted} devices failed)"
        )
    elif finished < required:
        status = GateStatus.WAITING
        reason = (
            f"install_failure_rate: {finished} of {required} installs needed finished "
            f"({attempted - finished} devices still installing or silent)"
        )
    check = MetricCheck(
        metric="install_failure_rate",
        status=status,
        after=rate,
        value=rate,
        threshold=threshold,
        devices=finished,
        reason=reason,
    )
    return _verdict(GateKind.INSTALL, [check])


_P = TypeVar("_P", HealthPair, QualityPair, ShadowSample)


def _by_device(items: Iterable[_P]) -> list[_P]:
    """One item per device (the last given wins), in device-id order."""
    return sorted({item.device_id: item for item in items}.values(), key=lambda i: i.device_id)


def health_gate(pairs: Iterable[HealthPair], policy: GatePolicy) -> GateVerdict:
    """Judge health after the install against the same devices before it.

    `pairs` holds one entry per installed device of the stage, with or without data: the
    number of entries is the population the minimum sample size is capped by.
    """
    devices = _by_device(pairs)
    required = _required(policy.min_devices_with_data, len(devices))
    windows = [
        (p.before, p.after)
        for p in devices
        if p.before is not None
        and p.after is not None
        and min(p.before.hours, p.after.hours) >= policy.min_window_hours
    ]
    missing = f"{_fmt(policy.min_window_hours)} h of health before and after the install"
    fps = [(b.fps, a.fps) for b, a in windows if b.fps and a.fps is not None]
    latency = [
        (b.latency_p95_ms, a.latency_p95_ms)
        for b, a in windows
        if b.latency_p95_ms and a.latency_p95_ms is not None
    ]
    restarts = [(b.restarts / b.hours, a.restarts / a.hours) for b, a in windows]
    judge = functools.partial(_check, required=required)
    return _verdict(
        GateKind.HEALTH,
        [
            judge("fps_drop_ratio", fps, _relative_drop, policy.max_fps_drop_ratio, missing),
            judge(
                "restarts_per_hour_increase",
                restarts,
                _rise,
                policy.max_restarts_per_hour_increase,
                missing,
                aggregate=statistics.fmean,  # one device in a crash loop must count
            ),
            judge(
                "latency_p95_increase_ratio",
                latency,
                _relative_rise,
                policy.max_latency_p95_increase_ratio,
                missing,
            ),
        ],
    )


def reading_quality_gate(pairs: Iterable[QualityPair], policy: GatePolicy) -> GateVerdict:
    """Judge reading quality after the install against the same devices before it.

    `pairs` holds one entry per installed device of the stage, as for `health_gate`.
    """
    devices = _by_device(pairs)
    required = _required(policy.min_devices_with_data, len(devices))
    windows = [
        (p.before, p.after)
        for p in devices
        if p.before is not None
        and p.after is not None
        and min(p.before.driving_hours, p.after.driving_hours) >= policy.min_driving_hours
    ]
    missing = f"{_fmt(policy.min_driving_hours)} h of driving before and after the install"
    rate = [
        (b.readings / b.driving_hours, a.readings / a.driving_hours)
        for b, a in windows
        if b.readings > 0
    ]
    enough = [(b, a) for b, a in windows if min(b.readings, a.readings) >= policy.min_readings]
    confidence = [
        (b.mean_confidence, a.mean_confidence)
        for b, a in enough
        if b.mean_confidence is not None and a.mean_confidence is not None
    ]
    disagreement = [(b.disagreements / b.readings, a.disagreements / a.readings) for b, a in enough]
    many = f"{missing} with {policy.min_readings} readings in each"
    judge = functools.partial(_check, required=required)
    return _verdict(
        GateKind.READING_QUALITY,
        [
            judge(
                "readings_per_hour_drop_ratio",
                rate,
                _relative_drop,
                policy.max_readings_per_hour_drop_ratio,
                missing,
            ),
            judge("mean_confidence_drop", confidence, _drop, policy.max_confidence_drop, many),
            judge(
                "disagreement_share_increase",
                disagreement,
                _rise,
                policy.max_disagreement_increase,
                many,
            ),
        ],
    )


def shadow_gate(samples: Iterable[ShadowSample], policy: GatePolicy) -> GateVerdict:
    """Judge the share of tracks the old and new model agree on, pooled over the stage.

    Does not apply when no device compared any track, unless the policy requires shadow data.
    """
    devices = [s for s in _by_device(samples) if s.tracks_compared > 0]
    compared = sum(s.tracks_compared for s in devices)
    agreed = sum(s.tracks_agreeing for s in devices)
    threshold = policy.min_shadow_agreement
    if not devices and not policy.require_shadow:
        return GateVerdict(
            gate=GateKind.SHADOW,
            status=GateStatus.NOT_APPLICABLE,
            reason="shadow: no device of the stage compared any track",
        )
    if compared < policy.min_shadow_tracks:
        check = MetricCheck(
            metric="shadow_agreement",
            status=GateStatus.WAITING,
            threshold=threshold,
            devices=len(devices),
            reason=f"shadow_agreement: {compared} of {policy.min_shadow_tracks} tracks needed "
            "compared",
        )
    else:
        share = agreed / compared
        check = MetricCheck(
            metric="shadow_agreement",
            status=GateStatus.FAIL if share < threshold else GateStatus.PASS,
            after=share,
            value=share,
            threshold=threshold,
            devices=len(devices),
            reason=""
            if share >= threshold
            else f"shadow_agreement {_fmt(share)} < threshold {_fmt(threshold)} "
            f"({agreed} of {compared} tracks agreed, {len(devices)} devices)",
        )
    return _verdict(GateKind.SHADOW, [check])
