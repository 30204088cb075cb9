"""A/B slots: safe extraction, verified staging, an atomic switch that survives SIGKILL, and a
boot that falls back on a corrupt record or a slot that no longer verifies."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from edge_agent.exceptions import OtaSlotError
from edge_agent.ota.slots import Slots, extract_bundle
from edge_agent.ota.state import SlotInfo
from tests.edge_agent.ota.conftest import versioned_bundle
from tests.tuf_repository import bundle_tar

REPO = Path(__file__).resolve().parents[3]


def info(version: str) -> SlotInfo:
    return SlotInfo(version=version, release=1, sha256="ab" * 32, detector_sha256="cd" * 32)


def tar_of(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"{version}.tar"
    path.write_bytes(bundle_tar(versioned_bundle(tmp_path / "src" / version, version)))
    return path


def staged_and_active(tmp_path: Path) -> Slots:
    slots = Slots(tmp_path / "state")
    slot, _ = slots.stage(tar_of(tmp_path, "1.0.0"), max_bytes=10**8)
    slots.activate(slot, info("1.0.0"), now=0)
    return slots


def test_a_bundle_is_staged_into_the_inactive_slot_and_activated_by_the_record(
    tmp_path: Path,
) -> None:
    slots = staged_and_active(tmp_path)
    assert slots.read_record().active == "a"  # type: ignore[union-attr]
    slot, bundle = slots.stage(tar_of(tmp_path, "2.0.0"), max_bytes=10**8)
    assert slot == "b"
    assert json.loads((bundle / "bundle.json").read_text())["version"] == "2.0.0"
    assert slots.read_record().active == "a"  # type: ignore[union-attr]
    record = slots.activate(slot, info("2.0.0"), now=5)
    assert (record.active, record.previous, record.probation_started) == ("b", "a", 5)
    assert slots.boot()[0].slot == "b"
    assert slots.roll_back().active == "a"


def test_a_rejected_bundle_stays_rejected_after_another_is_activated(tmp_path: Path) -> None:
    slots = staged_and_active(tmp_path)
    slots.reject("ee" * 32)  # say, its smoke test failed
    slot, _ = slots.stage(tar_of(tmp_path, "2.0.0"), max_bytes=10**8)
    record = slots.activate(slot, info("2.0.0"), now=5)
    assert "ee" * 32 in record.rejected
    assert "ee" * 32 in slots.read_record().rejected  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("/etc/passwd", tarfile.REGTYPE, "unsafe path"),
        ("detector/../../escape", tarfile.REGTYPE, "unsafe path"),
        ("bundle.json", tarfile.SYMTYPE, "link or device"),
        ("detector/hard", tarfile.LNKTYPE, "link or device"),
        ("dev", tarfile.CHRTYPE, "link or device"),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, name: str, kind: bytes, says: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = 1 if kind == tarfile.REGTYPE else 0
    member.linkname = "/etc/passwd"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    path = tmp_path / "evil.tar"
    path.write_bytes(buffer.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(OtaSlotError, match=says):
        extract_bundle(path, tmp_path / "out", max_bytes=10**6)
    assert not (tmp_path / "escape").exists()


def test_tar_unpacking_past_its_signed_length_is_refused(tmp_path: Path) -> None:
    path = tar_of(tmp_path, "1.0.0")
    (tmp_path / "out").mkdir()
    with pytest.raises(OtaSlotError, match="more than its 1000 signed bytes"):
        extract_bundle(path, tmp_path / "out", max_bytes=1000)


def test_a_bundle_failing_its_checksums_is_never_staged(tmp_path: Path) -> None:
    source = versioned_bundle(tmp_path / "src", "1.0.0")
    artifact = source / "detector" / "onnx_int8" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    path = tmp_path / "bad.tar"
    path.write_bytes(bundle_tar(source))
    with pytest.raises(OtaSlotError, match="fails its checksum"):
        Slots(tmp_path / "state").stage(path, max_bytes=10**8)


def test_boot_falls_back_to_the_previous_slot_when_the_active_one_is_corrupted(
    tmp_path: Path,
) -> None:
    slots = staged_and_active(tmp_path)
    slot, _ = slots.stage(tar_of(tmp_path, "2.0.0"), max_bytes=10**8)
    slots.activate(slot, info("2.0.0"), now=1)
    artifact = slots.bundle_dir("b") / "detector" / "onnx_int8" / "model.onnx"
    artifact.write_bytes(b"garbage")
    choice, _ = slots.boot()
    assert choice.slot == "a"
    assert "fails verification" in choice.reason


def test_a_corrupt_record_boots_the_shipped_bundle(tmp_path: Path) -> None:
    slots = staged_and_active(tmp_path)
    slots.record_path.write_text('{"active": "c"')
    with pytest.raises(OtaSlotError, match="corrupt"):
        slots.read_record()
    choice, record = slots.boot()
    assert (choice.slot, record) == (None, None)


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from edge_agent.ota import slots as module
    from edge_agent.ota.state import SlotInfo

    state, tar, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    slots = module.Slots(state)
    slot, _ = slots.stage(tar, max_bytes=10**8)
    if point == "after-extract":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace = os.replace
    def dying_replace(src, dst):
        # the new record is written and fsynced, the rename has not happened
        os.kill(os.getpid(), signal.SIGKILL)
    module.os.replace = dying_replace
    slots.activate(slot, SlotInfo("2.0.0", 2, "ab" * 32, "cd" * 32), now=1)
    """
)


@pytest.mark.parametrize("point", ["after-extract", "before-rename"])
def test_sigkill_between_extract_and_switch_leaves_the_old_slot_active(
    tmp_path: Path, point: str
) -> None:
    slots = staged_and_active(tmp_path)
    before = slots.record_path.read_bytes()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(slots.root.parent),
            str(tar_of(tmp_path, "2.0.0")),
            point,
        ],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    # it died where the test says: slot b extracted, and (before-rename) the new record written
    assert (slots.slot_dir("b") / "bundle" / "bundle.json").is_file()
    assert (slots.root / ".state.json.tmp").exists() == (point == "before-rename")
    assert slots.record_path.read_bytes() == before
    choice, record = slots.boot()
    assert record is not None
    assert (choice.slot, record.active) == ("a", "a")
