"""kill -9 at every point of an update, with real processes: the agent that starts next always
runs a verified model, and its next check finishes the update or keeps the old model.

Each agent process is tests/edge_agent/ota/crash_child.py: the real boot and Updater against
a real TUF repository over HTTP, dying by SIGKILL where the test names (crash_child.POINTS).
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import JsonLinesSink
from edge_agent.bundle import load_bundle
from edge_agent.ota.slots import Slots, verify_bundle
from edge_agent.ota.updater import Updater, boot_model
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import load_reader
from fleet_protocol.messages import ModelRef
from tests.edge_agent.ota.conftest import BUNDLE, DEVICE, Served, versioned_bundle
from tests.edge_agent.ota.crash_child import POINTS
from tests.tuf_repository import bundle_tar, sha256

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Device:
    """A device's profile and state on `served`, driven by real agent processes."""

    served: Served
    profile: DeviceProfile

    @property
    def slots(self) -> Slots:
        return Slots(self.profile.ota.state_dir)

    def agent(self, point: str) -> tuple[int, dict[str, Any]]:
        """Run one agent process to `point`; its exit code and what it wrote."""
        tmp = self.served.tmp
        profile_file, out = tmp / "profile.json", tmp / "agent-out.json"
        profile_file.write_text(self.profile.model_dump_json())
        out.unlink(missing_ok=True)
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.edge_agent.ota.crash_child",
                str(profile_file),
                point,
                str(out),
                str(tmp / "status.jsonl"),
            ],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
            capture_output=True,
            timeout=120,
            check=False,
        )
        if child.returncode not in {0, -signal.SIGKILL}:
            raise AssertionError(child.stderr.decode()[-4000:])
        written = json.loads(out.read_text()) if out.exists() else {}
        return child.returncode, written

    def statuses(self) -> list[dict[str, Any]]:
        """Every OtaStatus the agent processes sent, in order."""
        path = self.served.tmp / "status.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["message"] for line in path.read_text().splitlines()]

    def states(self) -> list[str]:
        return [status["state"] for status in self.statuses()]

    def active_version(self) -> str | None:
        record = self.slots.read_record()
        if record is None or record.active is None or not record.slots:
            return None
        return record.slots[record.active].version


def device(served: Served, **ota: object) -> Device:
    """A device running 1.0.0 from slot a, its probation over; 2.0.0 is assigned next."""
    root = served.tmp / "root.json"
    root.write_bytes(served.repo.trusted_root())
    profile = DeviceProfile.model_validate(
        {
            "identity": {"device_id": DEVICE},
            "detector": {"backend": "onnxruntime", "model_dir": str(served.tmp / "none")},
            "ota": {
                "enabled": True,
                "repository_url": served.url,
                "trusted_root_file": str(root),
                "state_dir": str(served.tmp / "state"),
                "request_timeout_s": 10,
                "probation_s": 3600,
                **ota,
            },
        }
    )
    served.publish_model("1.0.0")
    boot = boot_model(profile)
    updater = Updater(
        profile,
        device_id=DEVICE,
        sink=JsonLinesSink(io.StringIO(), DEVICE),
        running=boot.running,
        model=ModelRef(version="0.0.0", sha256="0" * 64),
        swap=lambda reader, model: None,
        boot=boot,
    )
    assert updater.check() == "active"
    updater.slots.end_probation()
    return Device(served, profile)


def assert_boots_a_verified_model(booted: dict[str, Any], versions: set[str]) -> None:
    """What a process booted verifies, loads, and is the version it says."""
    bundle = Path(booted["bundle_dir"])
    verify_bundle(bundle)
    assert load_bundle(bundle).version == booted["version"] in versions
    assert load_reader(bundle, backend="onnxruntime").detector.metadata.version == booted["version"]


# Where each kill leaves the device: the model the next process boots.
BOOTS_AFTER = {
    "mid-download": "1.0.0",
    "after-verify": "1.0.0",
    "mid-stage": "1.0.0",
    "mid-smoke-test": "1.0.0",
    "switch-before-rename": "1.0.0",
    "switch-after-rename": "2.0.0",
    "in-probation": "2.0.0",
}


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_an_update_boots_a_verified_model_and_the_next_check_finishes_it(
    served: Served, point: str
) -> None:
    dev = device(served)
    payload, _ = served.publish_model("2.0.0", rollout_id="rollout-2")
    code, _ = dev.agent(point)
    assert code == -signal.SIGKILL, f"the agent was not killed at {point}"
    # it died where the test says
    slot_b = dev.slots.slot_dir("b")
    if point == "mid-download":
        part = dev.profile.ota.state_dir / "downloads" / f"{sha256(payload)}.part"
        assert 0 < part.stat().st_size < len(payload)
    if point == "mid-stage":
        assert slot_b.is_dir()
        assert not (slot_b / "bundle-path").exists()
    if point == "switch-before-rename":
        assert (dev.slots.root / f".{dev.slots.record_path.name}.tmp").exists()
    assert (
        dev.states()[-1]
        == {
            "mid-download": "downloading",
            "after-verify": "verified",
            "mid-stage": "verified",
            "mid-smoke-test": "smoke_testing",
            "switch-before-rename": "smoke_testing",
            "switch-after-rename": "smoke_testing",
            "in-probation": "active",
        }[point]
    )

    code, written = dev.agent("none")
    assert code == 0
    assert_boots_a_verified_model(written["boot"], {"1.0.0", "2.0.0"})
    assert written["boot"]["version"] == BOOTS_AFTER[point]
    if BOOTS_AFTER[point] == "1.0.0":
        # the next check finishes the update
        assert written["state"] == "active"
        assert dev.states()[-5:] == ["downloading", "verified", "staged", "smoke_testing", "active"]
    else:
        # the update already switched: the next check has nothing left to do
        assert written["state"] is None
    assert dev.active_version() == "2.0.0"
    record = dev.slots.read_record()
    assert record is not None
    assert (record.active, record.previous) == ("b", "a")
    assert record.probation_started is not None
    if point == "mid-download":
        ranges = [
            h.get("Range")
            for p, h in served.journal.requests
            if p.endswith(f"{sha256(payload)}.bundle.tar")
        ]
        assert ranges[-1] == f"bytes={len(payload) // 2}-"
    # and a process after that boots the new model, verified
    code, written = dev.agent("none")
    assert_boots_a_verified_model(written["boot"], {"2.0.0"})
    # whichever process activated 2.0.0, the rollout heard `active` once, for the install's
    # own command: the one killed after the switch leaves it to the next start
    installing = next(s for s in dev.statuses() if s["state"] == "downloading")
    actives = [s for s in dev.statuses() if s["state"] == "active"]
    assert [(s["command_id"], s["rollout_id"], s["model_version"]) for s in actives] == [
        (installing["command_id"], "rollout-2", "2.0.0")
    ]
    assert dev.slots.read_record().activation_reported  # type: ignore[union-attr]


def test_a_crash_loop_in_probation_rolls_back_across_real_restarts(served: Served) -> None:
    dev = device(served, probation_max_restarts=2)
    served.publish_model("2.0.0")
    assert dev.agent("in-probation")[0] == -signal.SIGKILL  # 2.0.0 activated, then a crash
    # 2.0.0 crashes the agent at start: the first restart still runs it
    code, written = dev.agent("crash-while-new")
    assert (code, written["boot"]["version"]) == (-signal.SIGKILL, "2.0.0")
    # the second restart reaches the limit: the boot itself rolls back, before 2.0.0 loads
    code, written = dev.agent("crash-while-new")
    assert code == 0
    assert "crash loop" in written["boot"]["rolled_back"]
    assert_boots_a_verified_model(written["boot"], {"1.0.0"})
    assert dev.active_version() == "1.0.0"
    assert "rolled_back" in dev.states()
    # the check that followed refused to install the crashing model again
    assert written["state"] == "failed"
    assert dev.states()[-1] == "failed"


def test_a_bundle_failing_its_smoke_test_is_never_activated_by_any_process(
    served: Served,
) -> None:
    dev = device(served)
    folder = versioned_bundle(served.tmp / "bundles" / "misread", "2.0.0")
    index = folder / "golden" / "golden.json"
    recorded = json.loads(index.read_text())
    # a stop sign recorded where this bundle's detector never puts a box: not reproduced
    recorded["entries"][0]["readings"].append(
        {"sign_type": "stop", "bbox": [40.0, 0.0, 60.0, 10.0], "confidence": 0.9}
    )
    index.write_text(json.dumps(recorded))
    info = served.repo.add_model(BUNDLE, "2.0.0", bundle_tar(folder))
    served.repo.assign(DEVICE, info)
    served.repo.publish()
    code, written = dev.agent("none")
    assert (code, written["state"]) == (0, "failed")
    assert dev.states()[-2:] == ["smoke_testing", "failed"]
    # staged in slot b, never switched to: the next process boots 1.0.0 and does not retry
    assert (dev.slots.slot_dir("b") / "bundle-path").exists()
    code, written = dev.agent("none")
    assert_boots_a_verified_model(written["boot"], {"1.0.0"})
    assert written["state"] == "failed"
    assert dev.active_version() == "1.0.0"
