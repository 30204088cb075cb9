"""Gate evidence from stored rows: health windows (span, mean fps, restarts, detect p95),
driving hours that skip long gaps, reading quality, shadow numbers; and the ingestion mapping
that stores a report's rollout id and a health report's shadow numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fleet_protocol.messages import OtaState, OtaStatus
from fleet_server.crud.rollouts import ReadingStats
from fleet_server.ingest.worker import health_row, ota_status_row
from fleet_server.models import HealthSample
from fleet_server.rollouts import evidence
from tests.conftest import make_health

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def sample(minute: float, **fields: object) -> HealthSample:
    values: dict[str, object] = {
        "device_id": "cam-1",
        "seq": int(minute * 10),
        "observed_at": T0 + timedelta(minutes=minute),
        "fps": 30.0,
        "cpu_percent": 10,
        "rss_mb": 100,
        "disk_free_mb": 100,
        "camera_state": "ok",
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "frames_dropped": 0,
        "uptime_s": minute * 60 + 5,
        "stage_latency_ms": {"detect": {"p50_ms": 10, "p95_ms": 40}},
    }
    values.update(fields)
    return HealthSample.model_validate(values)


def test_a_health_window_spans_its_samples_and_counts_each_fall_of_uptime_as_a_restart() -> None:
    window = evidence.health_window(
        [
            sample(0, fps=20.0),
            sample(30, fps=30.0, uptime_s=3.0),  # restarted
            sample(60, fps=40.0, stage_latency_ms={"detect": {"p50_ms": 10, "p95_ms": 80}}),
            sample(90, uptime_s=1.0, stage_latency_ms={}),  # restarted again; no latency
        ]
    )
    assert window is not None
    assert window.hours == pytest.approx(1.5)
    assert window.fps == pytest.approx(30.0)
    assert window.restarts == 2
    assert window.latency_p95_ms == pytest.approx((40 + 40 + 80) / 3)
    assert evidence.health_window([]) is None


def test_driving_hours_count_camera_ok_time_and_at_most_the_longest_gap() -> None:
    samples = [
        sample(0),
        sample(10, camera_state="failed"),
        sample(20),  # 10 min with the camera failed: not driving
        sample(30),
        sample(150),  # 2 h silent: counted as 15 min at most
    ]
    hours = evidence.driving_hours(samples, max_gap_s=900)
    assert hours == pytest.approx((10 + 10 + 15) / 60)


def test_a_quality_window_carries_the_readings_and_is_none_without_any_data() -> None:
    stats = ReadingStats(count=40, mean_confidence=0.8, disagreements=3)
    window = evidence.quality_window([sample(0), sample(30)], stats, max_gap_s=3600)
    assert window is not None
    assert window.driving_hours == pytest.approx(0.5)
    assert (window.readings, window.mean_confidence, window.disagreements) == (40, 0.8, 3)
    empty = ReadingStats(count=0, mean_confidence=None, disagreements=0)
    assert evidence.quality_window([], empty, max_gap_s=300) is None


def test_shadow_numbers_come_from_a_health_sample_that_has_them() -> None:
    shadow = evidence.shadow_sample(
        sample(5, shadow_tracks_compared=120, shadow_tracks_agreeing=110)
    )
    assert shadow is not None
    assert (shadow.tracks_compared, shadow.tracks_agreeing) == (120, 110)
    assert evidence.shadow_sample(sample(5)) is None
    assert evidence.shadow_sample(None) is None


def test_ingestion_stores_the_rollout_id_and_the_shadow_numbers() -> None:
    status = OtaStatus(
        device_id="cam-1",
        seq=3,
        timestamp=T0,
        command_id=uuid.uuid4(),
        state=OtaState.ACTIVE,
        model_version="2.0.0",
        rollout_id="r-1",
    )
    assert ota_status_row(status)["rollout_id"] == "r-1"
    report = make_health(
        shadow={
            "previous_model": {"version": "1.0.0", "sha256": "a" * 64},
            "frames_compared": 500,
            "tracks_compared": 90,
            "tracks_agreeing": 85,
        }
    )
    row = health_row(report)
    assert row["shadow_previous_model"] == "1.0.0"
    assert (row["shadow_frames_compared"], row["shadow_tracks_compared"]) == (500, 90)
    assert row["shadow_tracks_agreeing"] == 85
    assert health_row(make_health())["shadow_tracks_compared"] is None
