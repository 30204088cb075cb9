"""The OTA decisions, pure: what to do with a signed assignment, which slot to boot, and whether
a model on probation stays.

Nothing here touches the network or the disk. The client (client.py) hands over what python-tuf
verified; the slots (slots.py) hand over their record; this module answers with a value that
says what happens and why, so every refusal of the layout contract is tested without I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from fleet_protocol.messages import OtaAction, OtaState

SlotName = Literal["a", "b"]
SLOTS: tuple[SlotName, SlotName] = ("a", "b")

INSTALL_STATES: tuple[OtaState, ...] = (
    OtaState.DOWNLOADING,
    OtaState.VERIFIED,
    OtaState.STAGED,
    OtaState.SMOKE_TESTING,
    OtaState.ACTIVE,
)
"""The states a good install reports, in order; probation_passed follows after its window."""


class AssignmentError(ValueError):
    """A signed target's custom field does not have the contract's shape."""


@dataclass(frozen=True)
class RunningModel:
    """The model a device runs now: the shipped bundle counts as release 0."""

    version: str
    release: int
    sha256: str
    """sha256 of the bundle target it came from ("" for the shipped bundle)."""


@dataclass(frozen=True)
class ModelTarget:
    """A model bundle as the offline-signed top-level targets role describes it."""

    path: str
    name: str
    version: str
    release: int
    length: int
    sha256: str


@dataclass(frozen=True)
class Assignment:
    """What the director role signed for one device."""

    path: str
    device_id: str
    target: str
    version: str
    release: int
    rollback: bool
    rollout_id: str | None
    length: int
    sha256: str


@dataclass(frozen=True)
class Nudge:
    """The parts of an OtaCommand a decision compares with the signed assignment."""

    action: OtaAction
    model_version: str
    target_path: str


def _roadsign(custom: Mapping[str, Any], kind: str, path: str) -> Mapping[str, Any]:
    body = custom.get("roadsign")
    if not isinstance(body, Mapping) or body.get("kind") != kind:
        raise AssignmentError(f"target {path} is not a roadsign {kind} (custom.roadsign.kind)")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type, path: str) -> Any:
    value = body.get(name)
    # bool is an int to Python; a release counter is never true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AssignmentError(f"target {path}: custom.roadsign.{name} is not a {kind.__name__}")
    return value


def model_target(
    path: str, length: int, hashes: Mapping[str, str], custom: Mapping[str, Any]
) -> ModelTarget:
    """A top-level model target's signed facts, or AssignmentError naming the bad field."""
    body = _roadsign(custom, "model", path)
    return ModelTarget(
        path=path,
        name=_field(body, "name", str, path),
        version=_field(body, "version", str, path),
        release=_field(body, "release", int, path),
        length=length,
        sha256=hashes.get("sha256", ""),
    )


def assignment(
    path: str, length: int, hashes: Mapping[str, str], custom: Mapping[str, Any]
) -> Assignment:
    """A director assignment's signed facts, or AssignmentError naming the bad field."""
    body = _roadsign(custom, "assignment", path)
    rollout = body.get("rollout_id")
    if rollout is not None and not isinstance(rollout, str):
        raise AssignmentError(f"target {path}: custom.roadsign.rollout_id is not a string")
    return Assignment(
        path=path,
        device_id=_field(body, "device_id", str, path),
        target=_field(body, "target", str, path),
        version=_field(body, "version", str, path),
        release=_field(body, "release", int, path),
        rollback=_field(body, "rollback", bool, path),
        rollout_id=rollout,
        length=length,
        sha256=hashes.get("sha256", ""),
    )


class Verdict(StrEnum):
    """What a device does with what the repository signed."""

    NOTHING = "nothing"
    INSTALL = "install"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    """A verdict and the reason, in words a status message can carry."""

    verdict: Verdict
    reason: str


def decide(
    *,
    device_id: str,
    running: RunningModel,
    signed: Assignment | None,
    model: ModelTarget | None,
    nudge: Nudge | None = None,
    max_bytes: int,
    rejected: tuple[str, ...] = (),
) -> Decision:
    """Follow the signed assignment, or say why not (the contract's device checks, in order)."""
    if signed is None:
        if nudge is not None:
            return Decision(
                Verdict.REFUSE,
                f"command names {nudge.target_path} but the repository signs no assignment "
                f"for {device_id}: unassigned model refused",
            )
        return Decision(Verdict.NOTHING, f"no signed assignment for {device_id}: keeps its model")
    if signed.device_id != device_id:
        return Decision(
            Verdict.REFUSE,
            f"assignment {signed.path} is signed for device {signed.device_id!r}, not "
            f"{device_id!r}: refused",
        )
    if model is None:
        return Decision(
            Verdict.REFUSE,
            f"mix-and-match: assignment names {signed.target}, which the offline-signed "
            "targets role does not hold",
        )
    mismatched = [
        name
        for name, ours, theirs in (
            ("length", signed.length, model.length),
            ("sha256", signed.sha256, model.sha256),
            ("release", signed.release, model.release),
            ("version", signed.version, model.version),
        )
        if ours != theirs
    ]
    if mismatched or not model.sha256:
        return Decision(
            Verdict.REFUSE,
            f"mix-and-match: assignment and model target {model.path} differ in "
            f"{', '.join(mismatched) or 'sha256'}: refused",
        )
    if nudge is not None and (
        nudge.target_path != signed.target or nudge.model_version != signed.version
    ):
        return Decision(
            Verdict.REFUSE,
            f"command names {nudge.target_path} ({nudge.model_version}) but the signed "
            f"assignment names {signed.target} ({signed.version}): refused",
        )
    if nudge is not None and nudge.action is OtaAction.ROLLBACK and not signed.rollback:
        return Decision(
            Verdict.REFUSE,
            f"command asks for a rollback to {signed.version} but the signed assignment is not "
            "a rollback: refused",
        )
    if signed.release == running.release:
        return Decision(
            Verdict.NOTHING, f"already runs {signed.version} (release {signed.release})"
        )
    if signed.release < running.release and not signed.rollback:
        return Decision(
            Verdict.REFUSE,
            f"older model refused: release {signed.release} ({signed.version}) is below the "
            f"running release {running.release} ({running.version}) and the assignment is no "
            "signed rollback",
        )
    if signed.sha256 in rejected:
        return Decision(
            Verdict.REFUSE,
            f"{signed.version} already failed on this device (smoke test or probation): not "
            "installed again",
        )
    if model.length > max_bytes:
        return Decision(
            Verdict.REFUSE,
            f"model target {model.path} is {model.length} bytes, over ota.max_model_mb "
            f"({max_bytes} bytes): refused before downloading",
        )
    return Decision(Verdict.INSTALL, f"install {signed.version} (release {signed.release})")


@dataclass(frozen=True)
class SlotInfo:
    """One slot's model, as the slot record holds it."""

    version: str
    release: int
    sha256: str
    """sha256 of the bundle target."""
    detector_sha256: str
    """sha256 of the detector artifact it runs (what ModelRef carries)."""
    rollout_id: str | None = None
    """The rollout that installed it, for the statuses of its probation (a rollback at boot)."""
    command_id: str | None = None
    """The command of the install that activated it, for an `active` reported after a kill."""


@dataclass(frozen=True)
class SlotRecord:
    """The slot record: which slot runs, which ran before, and the probation in progress."""

    active: SlotName | None = None
    previous: SlotName | None = None
    slots: Mapping[str, SlotInfo] | None = None
    probation_started: float | None = None
    """Wall-clock seconds when the active slot was switched to; None: not on probation."""
    probation_restarts: int = 0
    baseline: HealthNumbers | None = None
    """Health of the model before the switch, what the probation compares against."""
    rejected: tuple[str, ...] = ()
    """sha256 of bundle targets that failed here (smoke test, probation): not tried again."""
    activation_reported: bool = True
    """Whether the active slot's `active` status was sent; False between the switch and the
    report, so a process killed there reports it at its next start."""


@dataclass(frozen=True)
class BootChoice:
    """The slot to run (None: the shipped or configured bundle, release 0) and why."""

    slot: SlotName | None
    reason: str


def boot_choice(record: SlotRecord | None, verifies: Mapping[SlotName, bool]) -> BootChoice:
    """Run the active slot if it verifies, else the previous one, else the shipped bundle."""
    if record is None or record.active is None:
        return BootChoice(None, "no slot activated yet: runs the shipped bundle")
    if verifies.get(record.active, False):
        return BootChoice(record.active, f"slot {record.active} is active and verifies")
    if record.previous is not None and verifies.get(record.previous, False):
        return BootChoice(
            record.previous,
            f"slot {record.active} fails verification: runs the previous slot {record.previous}",
        )
    return BootChoice(
        None, f"slot {record.active} fails verification and no previous slot does: shipped bundle"
    )


@dataclass(frozen=True)
class ShadowNumbers:
    """Cumulative numbers of one probation's shadow reading (HealthReport.shadow's)."""

    frames_compared: int
    tracks_compared: int
    tracks_agreeing: int

    @property
    def agreement(self) -> float | None:
        """Share of compared tracks that agree; None before any track was compared."""
        return self.tracks_agreeing / self.tracks_compared if self.tracks_compared else None


@dataclass(frozen=True)
class HealthNumbers:
    """The numbers a probation compares: frames per second, detector p95 latency, and how the
    previous model reads the same frames (None: no shadow reading)."""

    fps: float
    detect_p95_ms: float | None
    shadow: ShadowNumbers | None = None


@dataclass(frozen=True)
class ProbationLimits:
    """Where a probation ends in a rollback (from the profile's ota section)."""

    window_s: float
    max_restarts: int
    min_fps_ratio: float
    max_p95_ratio: float
    min_shadow_tracks: int = 20
    """Tracks the shadow reading must have compared before its agreement can roll back."""
    min_shadow_agreement: float = 0.0
    """Lowest share of compared tracks on which the new and the previous model agree."""


class Probation(StrEnum):
    """Where a model on probation stands."""

    WATCHING = "watching"
    PASSED = "passed"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True)
class ProbationVerdict:
    """A probation outcome and why."""

    outcome: Probation
    reason: str


def probation_verdict(
    *,
    elapsed_s: float,
    restarts: int,
    before: HealthNumbers | None,
    now: HealthNumbers | None,
    limits: ProbationLimits,
) -> ProbationVerdict:
    """Crash loop, regression against the model before, or a shadow reading that disagrees
    with the previous model: roll back; the window over: passed."""
    if restarts >= limits.max_restarts:
        return ProbationVerdict(
            Probation.ROLL_BACK,
            f"crash loop: {restarts} restarts during probation (limit {limits.max_restarts})",
        )
    if before is not None and now is not None:
        if before.fps > 0 and now.fps < before.fps * limits.min_fps_ratio:
            return ProbationVerdict(
                Probation.ROLL_BACK,
                f"regression: {now.fps:.2f} fps against {before.fps:.2f} before (below "
                f"{limits.min_fps_ratio:.0%})",
            )
        if (
            before.detect_p95_ms
            and now.detect_p95_ms is not None
            and now.detect_p95_ms > before.detect_p95_ms * limits.max_p95_ratio
        ):
            return ProbationVerdict(
                Probation.ROLL_BACK,
                f"regression: detector p95 {now.detect_p95_ms:.1f} ms against "
                f"{before.detect_p95_ms:.1f} ms before (over x{limits.max_p95_ratio:g})",
            )
    shadow = now.shadow if now is not None else None
    if shadow is not None and shadow.tracks_compared >= limits.min_shadow_tracks:
        share = shadow.agreement or 0.0
        if share < limits.min_shadow_agreement:
            return ProbationVerdict(
                Probation.ROLL_BACK,
                f"shadow reading: the new model reads {shadow.tracks_agreeing} of "
                f"{shadow.tracks_compared} tracks as the previous one does ({share:.0%}, below "
                f"{limits.min_shadow_agreement:.0%})",
            )
    if elapsed_s >= limits.window_s:
        return ProbationVerdict(
            Probation.PASSED, f"no crash loop or regression in {elapsed_s:.0f} s"
        )
    return ProbationVerdict(Probation.WATCHING, "probation in progress")


def retry_delay(failures: int, *, initial_s: float, cap_s: float, jitter: float) -> float:
    """Seconds to the next check after `failures` failed refreshes in a row: doubling from
    `initial_s`, capped at `cap_s` (the check interval), and spread by `jitter` (0-1) over the
    upper half so that a fleet cut off together does not come back in step."""
    if failures <= 0:
        return cap_s
    base = min(cap_s, initial_s * 2.0 ** min(failures - 1, 62))
    return base * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def assignment_command_id(signed: Assignment) -> uuid.UUID:
    """The command id of an update the device found by itself: uuid5 of its assignment."""
    return uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"roadsign:assignment:{signed.device_id}:{signed.target}:{signed.release}:"
        f"{signed.rollback}",
    )


def probation_command_id(sha256: str) -> uuid.UUID:
    """The command id of a probation's statuses when its install's command is not known."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"roadsign:probation:{sha256}")


def slot_command_id(info: SlotInfo) -> uuid.UUID:
    """The command an activated slot's statuses carry: its install's, when the record has it."""
    if info.command_id is None:  # activated by an agent from before the record kept it
        return probation_command_id(info.sha256)
    return uuid.UUID(info.command_id)  # the record's parser checked it is one
