"""The pure OTA decisions: every refusal of the layout contract, the boot choice, probation."""

from __future__ import annotations

import pytest

from edge_agent.ota.state import (
    Assignment,
    AssignmentError,
    HealthNumbers,
    ModelTarget,
    Nudge,
    Probation,
    ProbationLimits,
    RunningModel,
    SlotRecord,
    Verdict,
    assignment,
    boot_choice,
    decide,
    model_target,
    probation_verdict,
    retry_delay,
)
from fleet_protocol.messages import OtaAction

SHA = "ab" * 32
OTHER = "cd" * 32
PATH = "models/roadsign/2026.12.0/bundle.tar"
RUNNING = RunningModel(version="2026.11.0", release=3, sha256=OTHER)
MODEL = ModelTarget(
    path=PATH, name="roadsign", version="2026.12.0", release=4, length=1000, sha256=SHA
)


def signed(**changes: object) -> Assignment:
    fields: dict[str, object] = {
        "path": "assignments/cam-1",
        "device_id": "cam-1",
        "target": PATH,
        "version": "2026.12.0",
        "release": 4,
        "rollback": False,
        "rollout_id": "r1",
        "length": 1000,
        "sha256": SHA,
    }
    return Assignment(**{**fields, **changes})  # type: ignore[arg-type]


def verdict(
    a: Assignment | None,
    model: ModelTarget | None = MODEL,
    nudge: Nudge | None = None,
    running: RunningModel = RUNNING,
    max_bytes: int = 10_000,
) -> tuple[Verdict, str]:
    d = decide(
        device_id="cam-1", running=running, signed=a, model=model, nudge=nudge, max_bytes=max_bytes
    )
    return d.verdict, d.reason


def test_newer_signed_assignment_installs() -> None:
    assert verdict(signed())[0] is Verdict.INSTALL


def test_no_assignment_keeps_the_running_model() -> None:
    assert verdict(None)[0] is Verdict.NOTHING


def test_same_release_is_nothing_to_do() -> None:
    running = RunningModel(version="2026.12.0", release=4, sha256=SHA)
    assert verdict(signed(), running=running)[0] is Verdict.NOTHING


def test_assignment_for_another_device_is_refused() -> None:
    v, reason = verdict(signed(device_id="cam-2"))
    assert v is Verdict.REFUSE
    assert "'cam-2'" in reason


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"length": 999}, "length"),
        ({"sha256": OTHER}, "sha256"),
        ({"release": 9}, "release"),
    ],
)
def test_mix_and_match_is_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    v, reason = verdict(signed(**changes))
    assert v is Verdict.REFUSE
    assert reason.startswith("mix-and-match")
    assert field in reason


def test_assignment_to_a_target_the_targets_role_lacks_is_mix_and_match() -> None:
    v, reason = verdict(signed(), model=None)
    assert (v, reason.split(":")[0]) == (Verdict.REFUSE, "mix-and-match")


def test_older_release_without_signed_rollback_is_refused() -> None:
    older = ModelTarget(**{**MODEL.__dict__, "release": 2})
    v, reason = verdict(signed(release=2), model=older)
    assert v is Verdict.REFUSE
    assert "older model refused" in reason


def test_older_release_with_signed_rollback_installs() -> None:
    older = ModelTarget(**{**MODEL.__dict__, "release": 2})
    assert verdict(signed(release=2, rollback=True), model=older)[0] is Verdict.INSTALL


def test_command_naming_another_target_than_the_assignment_is_refused() -> None:
    nudge = Nudge(OtaAction.INSTALL, "2026.10.0", "models/roadsign/2026.10.0/bundle.tar")
    v, reason = verdict(signed(), nudge=nudge)
    assert v is Verdict.REFUSE
    assert "command names models/roadsign/2026.10.0" in reason


def test_command_without_any_assignment_is_refused_as_unassigned() -> None:
    nudge = Nudge(OtaAction.INSTALL, "2026.12.0", PATH)
    v, reason = verdict(None, nudge=nudge)
    assert v is Verdict.REFUSE
    assert "unassigned" in reason


def test_rollback_command_for_an_assignment_that_is_no_rollback_is_refused() -> None:
    v, reason = verdict(signed(), nudge=Nudge(OtaAction.ROLLBACK, "2026.12.0", PATH))
    assert v is Verdict.REFUSE
    assert "not a rollback" in reason


def test_target_larger_than_the_profile_allows_is_refused_before_download() -> None:
    v, reason = verdict(signed(), max_bytes=999)
    assert v is Verdict.REFUSE
    assert "max_model_mb" in reason


def test_custom_fields_are_read_and_bad_ones_named() -> None:
    custom = {
        "roadsign": {
            "kind": "assignment",
            "device_id": "cam-1",
            "target": PATH,
            "version": "2026.12.0",
            "release": 4,
            "rollback": False,
            "rollout_id": None,
        }
    }
    parsed = assignment("assignments/cam-1", 1000, {"sha256": SHA}, custom)
    assert parsed == signed(rollout_id=None)
    with pytest.raises(AssignmentError, match="release"):
        assignment(
            "assignments/cam-1",
            1,
            {"sha256": SHA},
            {"roadsign": {**custom["roadsign"], "release": True}},
        )
    with pytest.raises(AssignmentError, match="not a roadsign model"):
        model_target(PATH, 1, {"sha256": SHA}, custom)


def test_boot_runs_the_active_slot_when_it_verifies() -> None:
    record = SlotRecord(active="b", previous="a")
    assert boot_choice(record, {"a": True, "b": True}).slot == "b"


def test_boot_falls_back_to_the_previous_slot_when_the_active_fails() -> None:
    record = SlotRecord(active="b", previous="a")
    assert boot_choice(record, {"a": True, "b": False}).slot == "a"


def test_boot_falls_back_to_the_shipped_bundle_when_no_slot_verifies() -> None:
    record = SlotRecord(active="b", previous="a")
    assert boot_choice(record, {"a": False, "b": False}).slot is None
    assert boot_choice(None, {"a": True, "b": True}).slot is None


LIMITS = ProbationLimits(window_s=60, max_restarts=3, min_fps_ratio=0.7, max_p95_ratio=1.5)
BEFORE = HealthNumbers(fps=10, detect_p95_ms=20)


@pytest.mark.parametrize(
    ("elapsed", "restarts", "now", "outcome", "says"),
    [
        (10, 3, BEFORE, Probation.ROLL_BACK, "crash loop"),
        (10, 0, HealthNumbers(fps=6, detect_p95_ms=20), Probation.ROLL_BACK, "fps"),
        (10, 0, HealthNumbers(fps=10, detect_p95_ms=31), Probation.ROLL_BACK, "p95"),
        (10, 2, HealthNumbers(fps=8, detect_p95_ms=29), Probation.WATCHING, "in progress"),
        (60, 0, BEFORE, Probation.PASSED, "no crash loop"),
        (60, 0, None, Probation.PASSED, "no crash loop"),
    ],
)
def test_probation_verdict(
    elapsed: float, restarts: int, now: HealthNumbers | None, outcome: Probation, says: str
) -> None:
    result = probation_verdict(
        elapsed_s=elapsed, restarts=restarts, before=BEFORE, now=now, limits=LIMITS
    )
    assert result.outcome is outcome
    assert says in result.reason


def test_failed_refreshes_back_off_doubling_with_jitter_up_to_the_check_interval() -> None:
    def delay(failures: int, jitter: float = 1.0) -> float:
        return retry_delay(failures, initial_s=15, cap_s=300, jitter=jitter)

    assert delay(0) == 300  # no failure: the check interval
    assert [delay(n) for n in range(1, 7)] == [15, 30, 60, 120, 240, 300]
    assert delay(1000) == 300
    # jitter spreads a delay over its upper half, never beyond it
    assert delay(3, jitter=0.0) == 30
    assert delay(3, jitter=0.5) == 45
    assert delay(3, jitter=7.0) == 60
