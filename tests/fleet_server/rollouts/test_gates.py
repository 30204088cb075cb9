"""The rollout gates: each kind passes, fails with a reason naming its numbers, waits on too
little data, and compares each device with itself."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_server.rollouts.gates import (
    GateKind,
    GatePolicy,
    GateStatus,
    HealthPair,
    HealthWindow,
    QualityPair,
    QualityWindow,
    ShadowSample,
    health_gate,
    install_gate,
    reading_quality_gate,
    shadow_gate,
)

POLICY = GatePolicy()


def healthy(
    device_id: str, fps: float = 20.0, latency: float = 40.0, restarts: int = 0
) -> HealthPair:
    before = HealthWindow(hours=2, fps=fps, restarts=0, latency_p95_ms=latency)
    after = HealthWindow(hours=2, fps=fps, restarts=restarts, latency_p95_ms=latency)
    return HealthPair(device_id=device_id, before=before, after=after)


def quality(
    device_id: str,
    *,
    before_readings: int = 100,
    after_readings: int = 100,
    before_conf: float = 0.9,
    after_conf: float = 0.9,
    before_disagree: int = 2,
    after_disagree: int = 2,
) -> QualityPair:
    return QualityPair(
        device_id=device_id,
        before=QualityWindow(
            driving_hours=2,
            readings=before_readings,
            mean_confidence=before_conf,
            disagreements=before_disagree,
        ),
        after=QualityWindow(
            driving_hours=2,
            readings=after_readings,
            mean_confidence=after_conf,
            disagreements=after_disagree,
        ),
    )


# --- install ------------------------------------------------------------------------------


def test_install_gate_passes_when_enough_installs_finished_and_few_failed() -> None:
    verdict = install_gate(attempted=40, succeeded=39, failed=1, policy=POLICY)
    assert verdict.gate is GateKind.INSTALL
    assert verdict.status is GateStatus.PASS
    assert verdict.checks[0].value == pytest.approx(1 / 40)


def test_install_gate_fails_naming_the_rate_the_threshold_and_the_counts() -> None:
    verdict = install_gate(attempted=20, succeeded=5, failed=2, policy=POLICY)
    assert verdict.status is GateStatus.FAIL
    # Failures alone already exceed 5% of the stage: more successes cannot save it.
    assert "install_failure_rate 0.1 > threshold 0.05" in verdict.reason
    assert "2 of 20 devices failed" in verdict.reason


def test_install_gate_waits_until_the_minimum_of_installs_finished() -> None:
    verdict = install_gate(attempted=40, succeeded=2, failed=0, policy=POLICY)
    assert verdict.status is GateStatus.WAITING
    assert "2 of 3 installs needed finished" in verdict.reason
    assert "38 devices still installing or silent" in verdict.reason


def test_install_gate_of_a_stage_smaller_than_the_minimum_needs_all_of_its_devices() -> None:
    assert (
        install_gate(attempted=1, succeeded=0, failed=0, policy=POLICY).status is GateStatus.WAITING
    )
    assert install_gate(attempted=1, succeeded=1, failed=0, policy=POLICY).status is GateStatus.PASS


def test_install_gate_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="impossible install counts"):
        install_gate(attempted=2, succeeded=2, failed=1, policy=POLICY)


# --- health -------------------------------------------------------------------------------


def test_health_gate_passes_when_the_same_devices_run_as_before() -> None:
    verdict = health_gate([healthy(f"d{i}") for i in range(5)], POLICY)
    assert verdict.status is GateStatus.PASS
    assert {c.metric for c in verdict.checks} == {
        "fps_drop_ratio",
        "restarts_per_hour_increase",
        "latency_p95_increase_ratio",
    }


def test_health_gate_fails_on_an_fps_drop_naming_before_after_and_threshold() -> None:
    pairs = [
        HealthPair(
            device_id=f"d{i}",
            before=HealthWindow(hours=2, fps=20, latency_p95_ms=40),
            after=HealthWindow(hours=2, fps=15, latency_p95_ms=40),
        )
        for i in range(3)
    ]
    verdict = health_gate(pairs, POLICY)
    assert verdict.status is GateStatus.FAIL
    assert "fps_drop_ratio 0.25 > threshold 0.1 (before 20, after 15, 3 devices)" in verdict.reason


def test_health_gate_compares_each_device_with_itself_not_with_the_others() -> None:
    # A slow device and a fast one, both unchanged: pooled before/after would look the same
    # here, but a slow device replacing a fast one must not read as a drop either way.
    pairs = [healthy("slow", fps=5), healthy("fast", fps=30), healthy("mid", fps=15)]
    assert health_gate(pairs, POLICY).status is GateStatus.PASS
    dropped = [
        HealthPair(
            device_id=p.device_id,
            before=p.before,
            after=HealthWindow(hours=2, fps=(p.before.fps or 0) * 0.8, latency_p95_ms=40),
        )
        for p in pairs
        if p.before is not None
    ]
    assert "fps_drop_ratio 0.2" in health_gate(dropped, POLICY).reason


def test_health_gate_fails_on_latency_and_on_restarts() -> None:
    slower = [healthy(f"d{i}") for i in range(2)] + [
        HealthPair(
            device_id="d9",
            before=HealthWindow(hours=2, fps=20, latency_p95_ms=40),
            after=HealthWindow(hours=2, fps=20, latency_p95_ms=80),
        )
    ]
    # One device of three twice as slow: the median holds, the gate passes.
    assert health_gate(slower, POLICY).status is GateStatus.PASS
    all_slower = [
        HealthPair(
            device_id=f"d{i}",
            before=HealthWindow(hours=2, fps=20, latency_p95_ms=40),
            after=HealthWindow(hours=2, fps=20, latency_p95_ms=60),
        )
        for i in range(3)
    ]
    assert (
        "latency_p95_increase_ratio 0.5 > threshold 0.25" in health_gate(all_slower, POLICY).reason
    )
    # One device in a crash loop fails the stage: restarts are averaged, not medianed.
    crashing = [healthy("a"), healthy("b"), healthy("c", restarts=20)]
    verdict = health_gate(crashing, POLICY)
    assert verdict.status is GateStatus.FAIL
    assert "restarts_per_hour_increase 3.333 > threshold 0.5" in verdict.reason


def test_health_gate_waits_while_too_few_devices_have_data_and_ignores_those_without() -> None:
    no_data = [HealthPair(device_id="d3"), HealthPair(device_id="d4", before=healthy("x").before)]
    short = HealthPair(
        device_id="d5",
        before=HealthWindow(hours=2, fps=20),
        after=HealthWindow(hours=0.1, fps=1),  # ten minutes of a bad fps: not yet a window
    )
    verdict = health_gate([healthy("d1"), healthy("d2"), *no_data, short], POLICY)
    assert verdict.status is GateStatus.WAITING
    assert "fps_drop_ratio: 2 of 3 devices needed have 0.5 h of health" in verdict.reason
    verdict = health_gate([healthy("d1"), healthy("d2"), healthy("d6"), *no_data, short], POLICY)
    assert verdict.status is GateStatus.PASS


def test_health_gate_of_no_devices_waits() -> None:
    assert health_gate([], POLICY).status is GateStatus.WAITING


# --- reading quality ----------------------------------------------------------------------


def test_reading_quality_gate_passes_when_devices_read_as_before() -> None:
    assert (
        reading_quality_gate([quality(f"d{i}") for i in range(3)], POLICY).status is GateStatus.PASS
    )


def test_reading_quality_gate_fails_on_fewer_readings_per_hour() -> None:
    verdict = reading_quality_gate([quality(f"d{i}", after_readings=60) for i in range(3)], POLICY)
    assert verdict.status is GateStatus.FAIL
    assert "readings_per_hour_drop_ratio 0.4 > threshold 0.2 (before 50, after 30, 3 devices)" in (
        verdict.reason
    )


def test_reading_quality_gate_fails_on_lower_confidence_and_more_disagreement() -> None:
    verdict = reading_quality_gate(
        [quality(f"d{i}", after_conf=0.7, after_disagree=12) for i in range(3)], POLICY
    )
    assert verdict.status is GateStatus.FAIL
    assert "mean_confidence_drop 0.2 > threshold 0.05 (before 0.9, after 0.7" in verdict.reason
    assert "disagreement_share_increase 0.1 > threshold 0.05 (before 0.02, after 0.12" in (
        verdict.reason
    )


def test_reading_quality_gate_waits_for_enough_driving_and_readings() -> None:
    parked = QualityPair(
        device_id="parked",
        before=QualityWindow(driving_hours=2, readings=100, mean_confidence=0.9),
        after=QualityWindow(driving_hours=0.1, readings=0),
    )
    verdict = reading_quality_gate([quality("a"), quality("b"), parked], POLICY)
    assert verdict.status is GateStatus.WAITING
    assert "2 of 3 devices needed have 0.25 h of driving" in verdict.reason


def test_quality_window_refuses_more_disagreements_than_readings() -> None:
    with pytest.raises(ValidationError, match="disagreements among only"):
        QualityWindow(driving_hours=1, readings=3, disagreements=4)


# --- shadow -------------------------------------------------------------------------------


def test_shadow_gate_does_not_apply_without_shadow_data_unless_required() -> None:
    assert shadow_gate([], POLICY).status is GateStatus.NOT_APPLICABLE
    assert shadow_gate([ShadowSample(device_id="a")], POLICY).status is GateStatus.NOT_APPLICABLE
    required = GatePolicy(require_shadow=True)
    assert shadow_gate([], required).status is GateStatus.WAITING


def test_shadow_sample_refuses_more_agreeing_tracks_than_compared() -> None:
    with pytest.raises(ValidationError, match="tracks agreed of only 3 compared"):
        ShadowSample(device_id="a", tracks_compared=3, tracks_agreeing=4)


def test_shadow_gate_waits_for_enough_tracks_then_judges_the_pooled_agreement() -> None:
    few = [ShadowSample(device_id="a", tracks_compared=30, tracks_agreeing=30)]
    verdict = shadow_gate(few, POLICY)
    assert verdict.status is GateStatus.WAITING
    assert "30 of 100 tracks needed" in verdict.reason
    good = [*few, ShadowSample(device_id="b", tracks_compared=70, tracks_agreeing=65)]
    assert shadow_gate(good, POLICY).status is GateStatus.PASS
    bad = [*few, ShadowSample(device_id="b", tracks_compared=70, tracks_agreeing=50)]
    verdict = shadow_gate(bad, POLICY)
    assert verdict.status is GateStatus.FAIL
    assert "shadow_agreement 0.8 < threshold 0.9 (80 of 100 tracks agreed, 2 devices)" in (
        verdict.reason
    )


# --- policy -------------------------------------------------------------------------------


def test_gate_policy_refuses_unknown_fields_and_out_of_range_thresholds() -> None:
    with pytest.raises(ValidationError, match="extra"):
        GatePolicy.model_validate({"max_fps_drop": 0.1})
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        GatePolicy(max_install_failure_rate=1.5)


def test_gate_policy_documents_and_defaults_every_field() -> None:
    for name, info in GatePolicy.model_fields.items():
        assert info.description, name
        assert not info.is_required(), name
    assert GatePolicy.model_validate_json(GatePolicy().model_dump_json()) == GatePolicy()
