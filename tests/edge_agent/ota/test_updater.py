"""The updater end to end on a real TUF repository over HTTP and real tiny bundles: the happy
path reports every state and swaps the reader; every attack ends in a failed status with the
active model unchanged; probation rolls back."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import TargetFile

from edge_agent.agent import JsonLinesSink
from edge_agent.ota.smoke import SmokeResult
from edge_agent.ota.state import HealthNumbers, RunningModel
from edge_agent.ota.updater import BootModel, Updater, boot_model
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader
from fleet_protocol.messages import ModelRef, OtaAction, OtaCommand
from tests.edge_agent.ota.conftest import BUNDLE, DEVICE, Served, versioned_bundle
from tests.tuf_repository import bundle_tar, sha256
from tests.waiting import wait_until

OLD = ModelRef(version="0.0.1", sha256="0" * 64)


class Rig:
    """An updater on `served`, its status lines, and the reader swaps it made."""

    def __init__(self, served: Served, **profile: object) -> None:
        self.served = served
        root = served.tmp / "root.json"
        root.write_bytes(served.repo.trusted_root())
        self.profile = DeviceProfile.model_validate(
            {
                "identity": {"device_id": DEVICE},
                "detector": {"backend": "onnxruntime", "model_dir": str(served.tmp / "none")},
                "ota": {
                    "enabled": True,
                    "repository_url": served.url,
                    "trusted_root_file": str(root),
                    "state_dir": str(served.tmp / "state"),
                    "request_timeout_s": 10,
                    **profile,
                },
            }
        )
        self.stream = io.StringIO()
        self.swaps: list[tuple[SignReader, ModelRef]] = []
        self.updater = self.make()

    def make(self, boot: BootModel | None = None, **kwargs: object) -> Updater:
        boot = boot or boot_model(self.profile)
        return Updater(
            self.profile,
            device_id=DEVICE,
            sink=JsonLinesSink(self.stream, DEVICE),
            running=boot.running,
            model=OLD,
            swap=lambda reader, model: self.swaps.append((reader, model)),
            boot=boot,
            **kwargs,  # type: ignore[arg-type]
        )

    def statuses(self) -> list[dict[str, object]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        assert all(line["topic"] == f"roadsign/v1/devices/{DEVICE}/ota/status" for line in lines)
        return [line["message"] for line in lines]

    def states(self) -> list[str]:
        return [str(s["state"]) for s in self.statuses()]

    def last(self) -> dict[str, object]:
        return self.statuses()[-1]

    def active_version(self) -> str | None:
        record = self.updater.slots.read_record()
        if record is None or record.active is None or not record.slots:
            return None
        return record.slots[record.active].version


def command(version: str, *, target: str | None = None, rollback: bool = False) -> OtaCommand:
    return OtaCommand(
        device_id=DEVICE,
        seq=1,
        timestamp=datetime.now(UTC),
        command_id=uuid.uuid4(),
        action=OtaAction.ROLLBACK if rollback else OtaAction.INSTALL,
        model_version=version,
        target_path=target or f"models/{BUNDLE}/{version}/bundle.tar",
    )


def installed(served: Served, rig: Rig, version: str) -> None:
    served.publish_model(version)
    assert rig.updater.check() == "active", rig.statuses()


def test_happy_path_reports_every_state_and_swaps_in_the_new_reader(served: Served) -> None:
    payload, _ = served.publish_model("2026.12.0", rollout_id="wave-1")
    rig = Rig(served)
    nudge = command("2026.12.0")
    assert rig.updater.check(nudge) == "active"
    assert rig.states() == [
        "received",
        "downloading",
        "verified",
        "staged",
        "smoke_testing",
        "active",
    ]
    assert {str(s["command_id"]) for s in rig.statuses()} == {str(nudge.command_id)}
    assert rig.last()["rollout_id"] == "wave-1"
    reader, model = rig.swaps[-1]
    assert model.version == "2026.12.0" == reader.detector.metadata.version
    assert rig.last()["running_model"] == {"version": "2026.12.0", "sha256": model.sha256}
    assert rig.active_version() == "2026.12.0"
    # the active model is served by the reader: it reads a frame
    assert [d.category for d in reader.detect(np.zeros((64, 64, 3), np.uint8))] == ["prohibitory"]
    # a second check has nothing to do and reports nothing
    assert rig.updater.check() is None
    assert rig.updater.running.sha256 == sha256(payload)


def test_updater_thread_finds_the_assignment_by_itself(served: Served) -> None:
    served.publish_model("2026.12.0")
    rig = Rig(served)
    rig.updater.start()
    try:
        wait_until(lambda: "active" in rig.states(), message="the update became active")
    finally:
        rig.updater.stop()
    assert rig.active_version() == "2026.12.0"


def test_tampered_artifact_fails_and_keeps_the_active_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    payload, info = served.publish_model("2.0.0")
    assert isinstance(info, TargetFile)
    served.repo.write_target(info, payload[:-1] + bytes([payload[-1] ^ 1]))
    assert rig.updater.check() == "failed"
    assert "tampered artifact" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"
    assert rig.last()["running_model"]["version"] == "1.0.0"  # type: ignore[index]


def test_assignment_signed_by_a_wrong_key_fails_and_keeps_the_active_model(
    served: Served,
) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    bin_name = served.repo.succinct.get_role_for_target(f"assignments/{DEVICE}")
    served.repo.signers[bin_name] = CryptoSigner.generate_ed25519()
    served.publish_model("2.0.0")
    assert rig.updater.check() == "failed"
    assert "not signed by the keys" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"


def test_replayed_old_metadata_fails_as_rollback_and_keeps_the_active_model(
    served: Served,
) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    old = served.repo.copy_metadata()
    served.publish_model("2.0.0")
    installed_two = rig.updater.check()
    assert installed_two == "active"
    served.repo.restore_metadata(old)
    assert rig.updater.check() == "failed"
    assert "rollback attack" in str(rig.last()["detail"])
    assert rig.active_version() == "2.0.0"


def test_frozen_expired_timestamp_fails_and_keeps_the_active_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    served.repo.timestamp_days = -1
    served.publish_model("2.0.0")
    assert rig.updater.check() == "failed"
    assert "freeze attack" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"


def test_mix_and_match_assignment_fails_and_keeps_the_active_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    other = served.bundle("9.9.9")
    served.publish_model("2.0.0", sha256=sha256(other), length=len(other))
    assert rig.updater.check() == "failed"
    assert str(rig.last()["detail"]).startswith("mix-and-match")
    assert rig.active_version() == "1.0.0"


def test_assignment_naming_a_path_outside_the_model_targets_is_mix_and_match(
    served: Served,
) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    # the online key signs an assignment whose "model" is another director target
    decoy = served.repo.assign(
        "cam-0002", served.repo.targets.signed.targets[f"models/{BUNDLE}/1.0.0/bundle.tar"]
    )
    forged = served.repo.assign(DEVICE, decoy)
    forged.custom["roadsign"]["release"] = 7
    served.repo.publish()
    assert rig.updater.check() == "failed"
    assert str(rig.last()["detail"]).startswith("mix-and-match")
    assert rig.active_version() == "1.0.0"


def test_endless_data_fails_and_keeps_the_active_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    payload, _ = served.publish_model("2.0.0")
    served.journal.extra_bytes[f"{sha256(payload)}.bundle.tar"] = b"\0" * (1 << 20)
    assert rig.updater.check() == "failed"
    assert "endless-data attack" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"


def test_command_naming_an_older_model_fails_and_keeps_the_active_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    served.publish_model("2.0.0")
    assert rig.updater.check() == "active"
    # the server re-assigns 1.0.0 without a signed rollback, and a command asks for it
    first = served.repo.targets.signed.targets[f"models/{BUNDLE}/1.0.0/bundle.tar"]
    served.repo.assign(DEVICE, first)
    served.repo.publish()
    assert rig.updater.check(command("1.0.0")) == "failed"
    assert "older model refused" in str(rig.last()["detail"])
    assert rig.active_version() == "2.0.0"


def test_command_naming_an_unassigned_model_fails_and_keeps_the_active_model(
    served: Served,
) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    served.repo.add_model(BUNDLE, "3.0.0", served.bundle("3.0.0"))
    served.repo.publish()
    assert rig.updater.check(command("3.0.0")) == "failed"
    assert "command names" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"


def test_signed_rollback_installs_an_older_model(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    installed(served, rig, "2.0.0")
    first = served.repo.targets.signed.targets[f"models/{BUNDLE}/1.0.0/bundle.tar"]
    served.repo.assign(DEVICE, first, rollback=True)
    served.repo.publish()
    assert rig.updater.check(command("1.0.0", rollback=True)) == "active"
    assert rig.active_version() == "1.0.0"


def test_assignment_for_another_device_fails_and_changes_nothing(served: Served) -> None:
    rig = Rig(served)
    served.publish_model("2.0.0", signed_for="cam-9999")
    assert rig.updater.check() == "failed"
    assert "not 'cam-0001'" in str(rig.last()["detail"])
    assert rig.active_version() is None
    assert rig.swaps == []


def test_download_cut_half_way_fails_then_resumes_at_the_next_check(served: Served) -> None:
    rig = Rig(served)
    payload, _ = served.publish_model("2.0.0")
    name = f"{sha256(payload)}.bundle.tar"
    served.journal.cut_after[name] = len(payload) // 2
    assert rig.updater.check() == "failed"
    assert "resumes" in str(rig.last()["detail"])
    assert rig.active_version() is None
    assert rig.updater.check() == "active"
    ranges = [h.get("Range") for p, h in served.journal.requests if p.endswith(name)]
    assert ranges == [None, f"bytes={len(payload) // 2}-"]


def test_unreachable_repository_fails_keeps_the_model_and_retries(served: Served) -> None:
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    served.journal.down = True
    assert rig.updater.check() == "failed"
    assert "HTTP 503" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"
    served.journal.down = False
    served.publish_model("2.0.0")
    assert rig.updater.check() == "active"


def test_failed_refreshes_back_off_and_a_good_one_returns_to_the_check_interval(
    served: Served,
) -> None:
    rig = Rig(served, retry_initial_s=10, check_interval_s=60)
    rig.updater = rig.make(jitter=lambda: 1.0)
    assert rig.updater.next_check_in() == 60
    served.journal.down = True
    waits = []
    for _ in range(4):
        assert rig.updater.check() == "failed"
        waits.append(rig.updater.next_check_in())
    assert waits == [10, 20, 40, 60]
    served.journal.down = False
    served.publish_model("2.0.0")
    assert rig.updater.check() == "active"
    assert rig.updater.next_check_in() == 60


def test_the_updater_thread_retries_a_failed_refresh_after_its_backoff(served: Served) -> None:
    rig = Rig(served, retry_initial_s=0.1, check_interval_s=3600)
    rig.updater = rig.make(jitter=lambda: 1.0)
    served.journal.down = True
    rig.updater.start()
    try:
        # an hour's check interval, yet the failed refresh is tried again soon, and again
        wait_until(lambda: rig.states().count("failed") >= 3, message="three backed-off retries")
        served.journal.down = False
        served.publish_model("2.0.0")
        wait_until(lambda: "active" in rig.states(), message="the retry after the outage")
    finally:
        rig.updater.stop()


def test_failed_smoke_test_is_never_activated_nor_retried(served: Served) -> None:
    rig = Rig(served)
    rig.updater = rig.make(smoke=lambda bundle: SmokeResult(False, "golden set failed: 0/3"))
    served.publish_model("2.0.0")
    assert rig.updater.check() == "failed"
    assert rig.states()[-2:] == ["smoke_testing", "failed"]
    assert "golden set failed" in str(rig.last()["detail"])
    assert rig.active_version() is None
    assert rig.swaps == []
    assert rig.updater.check() == "failed"
    assert "already failed on this device" in str(rig.last()["detail"])


def test_bundle_that_misreads_its_golden_set_is_never_activated(served: Served) -> None:
    pytest.importorskip("edge_agent.golden", reason="the golden-set check is not in this tree")
    rig = Rig(served)
    installed(served, rig, "1.0.0")
    folder = versioned_bundle(served.tmp / "bundles" / "misread", "2.0.0")
    index = folder / "golden" / "golden.json"
    golden = json.loads(index.read_text())
    # a stop sign recorded where this bundle's detector never puts a box: not reproduced
    golden["entries"][0]["readings"].append(
        {"sign_type": "stop", "bbox": [40.0, 0.0, 60.0, 10.0], "confidence": 0.9}
    )
    index.write_text(json.dumps(golden))
    info = served.repo.add_model(BUNDLE, "2.0.0", bundle_tar(folder))
    served.repo.assign(DEVICE, info)
    served.repo.publish()
    assert rig.updater.check() == "failed"
    assert rig.states()[-2:] == ["smoke_testing", "failed"]
    assert "golden set failed" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"


def test_model_larger_than_the_profile_allows_is_refused_before_downloading(
    served: Served,
) -> None:
    rig = Rig(served, max_model_mb=0.001)
    payload, _ = served.publish_model("2.0.0")
    assert rig.updater.check() == "failed"
    assert "max_model_mb" in str(rig.last()["detail"])
    assert not any(p.endswith(f"{sha256(payload)}.bundle.tar") for p in served.journal.paths())


def test_probation_regression_rolls_back_to_the_previous_slot(served: Served) -> None:
    rig = Rig(served, probation_s=3600)
    rig.updater.health = lambda: None
    installed(served, rig, "1.0.0")
    rig.updater.watch.clock = lambda: 1e12  # 1.0.0's probation is long over
    assert rig.updater.watch_probation() == "probation_passed"
    rig.updater.watch.clock = rig.updater.clock
    installed(served, rig, "2.0.0")
    record = rig.updater.slots.read_record()
    assert record is not None
    rig.updater.slots.write_record(
        type(record)(**{**record.__dict__, "baseline": HealthNumbers(fps=10, detect_p95_ms=20)})
    )
    assert rig.updater.watch_probation(HealthNumbers(fps=9, detect_p95_ms=21)) is None
    assert rig.updater.watch_probation(HealthNumbers(fps=3, detect_p95_ms=21)) == "rolled_back"
    assert "regression" in str(rig.last()["detail"])
    assert rig.active_version() == "1.0.0"
    assert rig.swaps[-1][1].version == "1.0.0"
    # the rolled-back model is not installed again from the same assignment
    assert rig.updater.check() == "failed"
    assert rig.active_version() == "1.0.0"


def test_crash_loop_during_probation_rolls_back_at_boot_and_names_the_rollout(
    served: Served,
) -> None:
    rig = Rig(served, probation_s=3600, probation_max_restarts=2)
    installed(served, rig, "1.0.0")
    rig.updater.slots.end_probation()
    served.publish_model("2.0.0", rollout_id="wave-2")
    assert rig.updater.check() == "active"
    # two agent starts while 2.0.0 is on probation
    assert boot_model(rig.profile).running.version == "2.0.0"
    boot = boot_model(rig.profile)
    assert boot.rolled_back is not None
    assert "crash loop" in boot.rolled_back
    assert boot.running.version == "1.0.0"
    assert Path(boot.bundle_dir).is_relative_to(rig.updater.slots.root)
    updater = rig.make(boot)
    assert updater.running.version == "1.0.0"
    updater.start()
    try:
        wait_until(lambda: "rolled_back" in rig.states(), message="the rollback was reported")
    finally:
        updater.stop()
    # the status names the model rolled back and its rollout, as the server's gates need
    [status] = [s for s in rig.statuses() if s["state"] == "rolled_back"]
    assert (status["model_version"], status["rollout_id"]) == ("2.0.0", "wave-2")
    assert "crash loop" in str(status["detail"])


@pytest.mark.parametrize("enabled", [False])
def test_without_ota_the_profile_bundle_runs_as_release_0(tmp_path: Path, enabled: bool) -> None:
    profile = DeviceProfile.model_validate(
        {"ota": {"enabled": enabled, "state_dir": str(tmp_path)}}
    )
    boot = boot_model(profile)
    assert (boot.bundle_dir, boot.running.release) == (profile.detector.model_dir, 0)
    assert RunningModel(version=boot.running.version, release=0, sha256="") == boot.running
