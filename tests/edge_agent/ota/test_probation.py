"""What a probation takes from health reports, and the watch that records its outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.ota.probation import ProbationWatch, health_numbers
from edge_agent.ota.slots import Slots
from edge_agent.ota.state import HealthNumbers, Probation, ProbationLimits, SlotInfo
from fleet_protocol.messages import CameraState, HealthReport, LatencyStats, ModelRef

NEW = ModelRef(version="2.0.0", sha256="ab" * 32)
OLD = ModelRef(version="1.0.0", sha256="cd" * 32)


def report(model: ModelRef, camera: CameraState = CameraState.OK) -> HealthReport:
    return HealthReport.model_validate(
        {
            "device_id": "cam-1",
            "seq": 1,
            "timestamp": datetime.now(UTC),
            "agent_version": "0.1.0",
            "model": model,
            "uptime_s": 10,
            "fps": 12.5,
            "stage_latency_ms": {"detect": LatencyStats(p50_ms=10, p95_ms=18)},
            "cpu_percent": 50,
            "rss_mb": 100,
            "disk_free_mb": 1000,
            "camera_state": camera,
            "outbox_depth": 0,
            "outbox_dropped": 0,
        }
    )


def test_numbers_come_from_a_report_of_the_model_on_probation() -> None:
    assert health_numbers(report(NEW), NEW) == HealthNumbers(fps=12.5, detect_p95_ms=18)


@pytest.mark.parametrize(
    ("made", "why"),
    [
        (report(OLD), "a report of the model before"),
        (report(NEW, CameraState.RECONNECTING), "a camera not delivering"),
        (None, "no report yet"),
    ],
)
def test_reports_that_say_nothing_about_the_model_give_no_numbers(
    made: HealthReport | None, why: str
) -> None:
    assert health_numbers(made, NEW) is None, why


def test_the_watch_records_a_pass_and_a_rollback(tmp_path: Path) -> None:
    slots = Slots(tmp_path)
    limits = ProbationLimits(window_s=60, max_restarts=3, min_fps_ratio=0.7, max_p95_ratio=1.5)
    now = [0.0]
    watch = ProbationWatch(slots, limits, clock=lambda: now[0])
    assert watch.check(None) is None  # no record: nothing on probation
    info = SlotInfo(version="1", release=1, sha256="ab" * 32, detector_sha256="cd" * 32)
    slots.activate("a", info, now=0)
    assert watch.check(None).outcome is Probation.WATCHING  # type: ignore[union-attr]
    now[0] = 61
    assert watch.check(None).outcome is Probation.PASSED  # type: ignore[union-attr]
    assert slots.read_record().probation_started is None  # type: ignore[union-attr]
    slots.activate("b", info, now=61, baseline=HealthNumbers(fps=10, detect_p95_ms=10))
    verdict = watch.check(HealthNumbers(fps=10, detect_p95_ms=30))
    assert verdict is not None
    assert verdict.outcome is Probation.ROLL_BACK
    record = slots.read_record()
    assert record is not None
    assert (record.active, record.rejected) == ("a", ("ab" * 32,))
