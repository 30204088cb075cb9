"""The shadow numbers of a probation are cumulative since the install: an agent restarted during
the probation (a second Updater on the same state folder) goes on from where the first stopped,
and another install starts from 0."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.agent import JsonLinesSink
from edge_agent.ota.shadow_runner import ShadowRunner, ShadowStore
from edge_agent.ota.state import ShadowNumbers
from edge_agent.ota.updater import SHADOW_FILE, Updater, boot_model
from fleet_protocol.messages import CameraState, ModelRef, ShadowReport
from tests.edge_agent.ota.conftest import BUNDLE, DEVICE, Served
from tests.edge_agent.ota.shadow_models import DEFAULT, golden_frames, reader, worse_bundle
from tests.edge_agent.ota.test_shadow import agent_on, shadow_profile, shadow_read
from tests.tuf_repository import bundle_tar
from tests.waiting import wait_until


def counted(report: ShadowReport | None) -> tuple[int, int, int]:
    assert report is not None
    return report.frames_compared, report.tracks_compared, report.tracks_agreeing


def test_shadow_numbers_keep_growing_across_a_restart_during_probation(served: Served) -> None:
    profile = shadow_profile(served)
    shipped = reader(DEFAULT)
    agent = agent_on(served.tmp, shipped)
    boot = boot_model(profile)
    first = Updater(
        profile,
        device_id=DEVICE,
        sink=JsonLinesSink(io.StringIO(), DEVICE),
        running=replace(boot.running, version=shipped.detector.metadata.version),
        model=agent.model,
        swap=agent.use_reader,
        boot=boot,
        shadow=agent.use_shadow,
    )
    worse = worse_bundle(served.tmp / "worse")
    info = served.repo.add_model(BUNDLE, "2.0.0", bundle_tar(worse))
    served.repo.assign(DEVICE, info, rollout_id="wave-1")
    served.repo.publish()
    assert first.check() == "active"
    runner = agent.shadow
    assert runner is not None
    shadow_read(agent, runner, golden_frames())
    before = counted(
        agent.health_report(camera=CameraState.OK, frames_dropped=0, outbox=None).shadow
    )
    assert before[0] == 3 * len(golden_frames())
    assert before[1] > 0
    # a clean shutdown (the runner's `finally`) keeps them in the state folder
    agent.use_shadow(None)
    assert (profile.ota.state_dir / SHADOW_FILE).is_file()

    # a new process: its own agent and Updater on the same state folder, on the new model
    restarted_boot = boot_model(profile)
    assert restarted_boot.running.version == "2.0.0"
    again = agent_on(served.tmp, reader(restarted_boot.bundle_dir))
    second = Updater(
        profile,
        device_id=DEVICE,
        sink=JsonLinesSink(io.StringIO(), DEVICE),
        running=restarted_boot.running,
        model=again.model,
        swap=again.use_reader,
        boot=restarted_boot,
        shadow=again.use_shadow,
    )
    resumed = second.resume_shadow()
    assert resumed is not None
    assert again.shadow is resumed
    # before the new process compares a frame it already reports the numbers since the install
    assert counted(resumed.report()) == before
    shadow_read(again, resumed, golden_frames())
    after = counted(
        again.health_report(camera=CameraState.OK, frames_dropped=0, outbox=None).shadow
    )
    again.use_shadow(None)
    assert after[0] == 2 * before[0]
    assert after[1] > before[1]
    assert after[2] >= before[2]


def test_shadow_numbers_of_another_install_are_not_resumed(tmp_path: Path) -> None:
    path = tmp_path / SHADOW_FILE
    ShadowStore(path, "aa@1.0").save(ShadowNumbers(30, 9, 8))
    assert ShadowStore(path, "aa@1.0").load() == ShadowNumbers(30, 9, 8)
    # the same target installed again later, or another target: a new install, from 0
    assert ShadowStore(path, "aa@2.0").load() == ShadowNumbers(0, 0, 0)
    assert ShadowStore(path, "bb@1.0").load() == ShadowNumbers(0, 0, 0)
    meta = reader(DEFAULT).detector.metadata
    runner = ShadowRunner(
        reader(DEFAULT),
        ModelRef(version=meta.version, sha256=meta.sha256),
        every_n_frames=1,
        store=ShadowStore(path, "bb@1.0"),
    )
    assert counted(runner.report()) == (0, 0, 0)


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"install": "aa@1.0"}'])
def test_unreadable_shadow_numbers_start_from_zero(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / SHADOW_FILE
    path.write_bytes(body)
    assert ShadowStore(path, "aa@1.0").load() == ShadowNumbers(0, 0, 0)


def test_shadow_numbers_are_kept_while_reading_not_only_at_shutdown(tmp_path: Path) -> None:
    """A process killed without its clean shutdown loses at most the last few seconds."""
    path = tmp_path / SHADOW_FILE
    store = ShadowStore(path, "aa@1.0")
    previous = reader(DEFAULT)
    meta = previous.detector.metadata
    runner = ShadowRunner(
        previous,
        ModelRef(version=meta.version, sha256=meta.sha256),
        every_n_frames=1,
        store=store,
        save_every_s=0,
    ).start()
    agent = agent_on(tmp_path, reader(DEFAULT))
    try:
        shadow_read(agent, runner, golden_frames()[:2])
        wait_until(lambda: store.load() == runner.numbers(), message="the numbers were saved")
        assert store.load().frames_compared == 6
    finally:
        agent.use_shadow(None)
