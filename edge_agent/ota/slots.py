"""Two model slots and their record: where verified bundles are staged and which one runs.

``<state>/slots/a`` and ``/b`` each hold one extracted bundle; ``<state>/slots/state.json``
says which is active, which ran before, and the probation in progress. A bundle is only ever
extracted into the slot that is not active, and the switch is one atomic record write (write a
temporary file, fsync it, rename it over the record, fsync the folder): a crash at any point
leaves either the old record or the new one, never half of one. Boot reads the record and runs
the active slot if its bundle verifies, else the previous one, else the shipped bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from edge_agent.bundle import load_bundle, load_metadata
from edge_agent.exceptions import ModelError, OtaSlotError
from edge_agent.ota.state import (
    SLOTS,
    BootChoice,
    HealthNumbers,
    SlotInfo,
    SlotName,
    SlotRecord,
    boot_choice,
)

log = logging.getLogger(__name__)

RECORD = "state.json"
BUNDLE = "bundle"
_CHUNK = 1 << 16
_REMEMBERED = 32
"""Rejected bundle targets kept in the record; older ones may be tried again."""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old bytes or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _record_json(record: SlotRecord) -> bytes:
    body = asdict(record)
    body["slots"] = {name: asdict(info) for name, info in (record.slots or {}).items()}
    return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def _slot_name(value: Any) -> SlotName | None:
    if value is None:
        return None
    if value not in SLOTS:
        raise ValueError(f"not a slot: {value!r}")
    return value  # type: ignore[no-any-return]


def _parse_record(data: bytes) -> SlotRecord:
    body = json.loads(data)
    slots = {
        str(name): SlotInfo(
            version=str(info["version"]),
            release=int(info["release"]),
            sha256=str(info["sha256"]),
            detector_sha256=str(info["detector_sha256"]),
            rollout_id=None if info.get("rollout_id") is None else str(info["rollout_id"]),
            command_id=None
            if info.get("command_id") is None
            else str(uuid.UUID(str(info["command_id"]))),
        )
        for name, info in dict(body.get("slots") or {}).items()
    }
    started = body.get("probation_started")
    baseline = body.get("baseline")
    return SlotRecord(
        active=_slot_name(body.get("active")),
        previous=_slot_name(body.get("previous")),
        slots=slots,
        probation_started=None if started is None else float(started),
        probation_restarts=int(body.get("probation_restarts", 0)),
        rejected=tuple(str(sha) for sha in body.get("rejected") or ()),
        # a record from before this was kept: its activation is long reported
        activation_reported=bool(body.get("activation_reported", True)),
        baseline=None
        if baseline is None
        else HealthNumbers(
            fps=float(baseline["fps"]),
            detect_p95_ms=None
            if baseline.get("detect_p95_ms") is None
            else float(baseline["detect_p95_ms"]),
        ),
    )


def _member_target(root: Path, member: tarfile.TarInfo) -> Path:
    """Where a tar member goes, or OtaSlotError when it could land anywhere else."""
    name = member.name
    parts = [p for p in name.split("/") if p not in {"", "."}]
    if name.startswith("/") or ".." in parts or not parts or "\\" in name:
        raise OtaSlotError(f"unsafe path in model bundle tar: {name[:200]!r}")
    if not (member.isfile() or member.isdir()):
        raise OtaSlotError(
            f"model bundle tar member {name[:200]!r} is a link or device, which a bundle never has"
        )
    return root.joinpath(*parts)


def extract_bundle(tar_path: Path, destination: Path, *, max_bytes: int) -> Path:
    """Extract a bundle tar safely into `destination`; the folder holding bundle.json.

    Refused: absolute paths, ``..``, links, devices, and members whose sizes add up past
    `max_bytes` (the signed target length), all checked before a member's bytes are written.
    """
    total = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                target = _member_target(destination, member)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise OtaSlotError(
                        f"model bundle tar unpacks to more than its {max_bytes} signed bytes"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isfile() members always have bytes
                    raise OtaSlotError(f"model bundle tar member {member.name!r} has no data")
                with source, target.open("wb") as out:
                    remaining = member.size
                    while remaining and (chunk := source.read(min(_CHUNK, remaining))):
                        out.write(chunk)
                        remaining -= len(chunk)
    except (tarfile.TarError, OSError) as e:
        raise OtaSlotError(f"model bundle tar {tar_path.name} cannot be extracted: {e}") from e
    if (destination / "bundle.json").is_file():
        return destination
    inner = [p for p in destination.iterdir() if (p / "bundle.json").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise OtaSlotError("model bundle tar holds no bundle.json")


def verify_bundle(directory: Path) -> None:
    """Every artifact of the bundle in `directory` against its sidecar sha256 (ModelError)."""
    index = load_bundle(directory)
    root = directory.resolve()
    for relative in [*index.detector.values(), index.classifier]:
        artifact = (directory / relative).resolve()
        if not artifact.is_relative_to(root):
            raise ModelError(f"bundle {index.name} names {relative}, outside its folder")
        load_metadata(artifact)


def _remember(rejected: tuple[str, ...], sha256: str | None) -> tuple[str, ...]:
    if not sha256 or sha256 in rejected:
        return rejected
    return (*rejected, sha256)[-_REMEMBERED:]


class Slots:
    """The A/B slots under ``<state_dir>/slots`` and their record."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "slots"
        self.record_path = self.root / RECORD

    def slot_dir(self, slot: SlotName) -> Path:
        """The folder of `slot`."""
        return self.root / slot

    def bundle_dir(self, slot: SlotName) -> Path:
        """The bundle folder staged in `slot` (where bundle.json is)."""
        marker = self.slot_dir(slot) / "bundle-path"
        if marker.is_file():
            return self.slot_dir(slot) / marker.read_text(encoding="utf-8").strip()
        return self.slot_dir(slot) / BUNDLE

    def read_record(self) -> SlotRecord | None:
        """The record, None before any activation; OtaSlotError when it cannot be parsed."""
        try:
            data = self.record_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OtaSlotError(f"cannot read the slot record {self.record_path}: {e}") from e
        try:
            return _parse_record(data)
        except (ValueError, KeyError, TypeError) as e:
            raise OtaSlotError(f"the slot record {self.record_path} is corrupt: {e}") from e

    def write_record(self, record: SlotRecord) -> None:
        """Replace the record atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically(self.record_path, _record_json(record))
        except OSError as e:
            raise OtaSlotError(f"cannot write the slot record {self.record_path}: {e}") from e

    def inactive(self) -> SlotName:
        """The slot a new bundle goes into: never the active one."""
        record = self.read_record()
        return "b" if record is not None and record.active == "a" else "a"

    def stage(self, tar_path: Path, *, max_bytes: int) -> tuple[SlotName, Path]:
        """Extract and verify a downloaded bundle into the inactive slot; its slot and folder."""
        slot = self.inactive()
        folder = self.slot_dir(slot)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / BUNDLE).mkdir(parents=True)
        bundle = extract_bundle(tar_path, folder / BUNDLE, max_bytes=max_bytes)
        try:
            verify_bundle(bundle)
        except ModelError as e:
            raise OtaSlotError(f"staged bundle in slot {slot} fails verification: {e}") from e
        (folder / "bundle-path").write_text(str(bundle.relative_to(folder)), encoding="utf-8")
        return slot, bundle

    def verifies(self, slot: SlotName) -> bool:
        """Whether the bundle in `slot` is there and every artifact matches its sidecar."""
        try:
            verify_bundle(self.bundle_dir(slot))
        except (ModelError, OSError) as e:
            log.warning("slot %s does not verify: %s", slot, e)
            return False
        return True

    def activate(
        self, slot: SlotName, info: SlotInfo, *, now: float, baseline: HealthNumbers | None = None
    ) -> SlotRecord:
        """Switch to `slot` (one record write) and start its probation against `baseline`."""
        record = self.read_record() or SlotRecord()
        slots = {**(record.slots or {}), slot: info}
        new = SlotRecord(
            active=slot,
            previous=record.active,
            slots=slots,
            probation_started=now,
            probation_restarts=0,
            # the previous model's own shadow numbers are not what the new one is held to
            baseline=replace(baseline, shadow=None) if baseline else None,
            # a bundle that failed here stays refused whatever is activated after it
            rejected=record.rejected,
            activation_reported=False,
        )
        self.write_record(new)
        return new

    def activation_was_reported(self) -> SlotRecord | None:
        """Note that the active slot's `active` status was sent (so it is sent once)."""
        record = self.read_record()
        if record is None or record.activation_reported:
            return record
        new = replace(record, activation_reported=True)
        self.write_record(new)
        return new

    def roll_back(self) -> SlotRecord:
        """Switch back to the previous slot (None: the shipped bundle), ending the probation;
        the bundle rolled back from is remembered as rejected."""
        record = self.read_record() or SlotRecord()
        failed = (record.slots or {}).get(record.active or "")
        new = SlotRecord(
            active=record.previous,
            previous=None,
            slots=record.slots,
            rejected=_remember(record.rejected, failed.sha256 if failed else None),
        )
        self.write_record(new)
        return new

    def reject(self, sha256: str) -> SlotRecord:
        """Remember a bundle target that failed before activation (its smoke test)."""
        record = self.read_record() or SlotRecord()
        new = replace(record, rejected=_remember(record.rejected, sha256))
        self.write_record(new)
        return new

    def end_probation(self) -> SlotRecord:
        """Mark the active slot's probation passed."""
        record = self.read_record() or SlotRecord()
        new = replace(record, probation_started=None, probation_restarts=0, baseline=None)
        self.write_record(new)
        return new

    def count_restart(self) -> SlotRecord | None:
        """Count one agent start against a probation in progress (a crash loop shows here)."""
        record = self.read_record()
        if record is None or record.probation_started is None:
            return record
        new = replace(record, probation_restarts=record.probation_restarts + 1)
        self.write_record(new)
        return new

    def boot(self) -> tuple[BootChoice, SlotRecord | None]:
        """Which slot to run now; a corrupt record counts as none (the shipped bundle runs)."""
        try:
            record = self.read_record()
        except OtaSlotError as e:
            return BootChoice(None, f"{e}: runs the shipped bundle"), None
        verifies = {slot: self.verifies(slot) for slot in SLOTS}
        return boot_choice(record, verifies), record
