"""The shadow reading: the pure per-track comparison, the thread that never holds the frame
loop up, and real models read side by side in a real frame loop."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent import Agent, JsonLinesSink, agent_metrics
from edge_agent.health import HealthMonitor
from edge_agent.ota.probation import health_numbers
from edge_agent.ota.shadow import ShadowTally, TrackedBox, pair
from edge_agent.ota.shadow_runner import ShadowRunner
from edge_agent.ota.state import (
    HealthNumbers,
    Probation,
    ProbationLimits,
    ShadowNumbers,
    probation_verdict,
)
from edge_agent.ota.updater import Updater, boot_model
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader, SignReading
from edge_agent.sources import Frame
from fleet_protocol.messages import CameraState, ModelRef
from fleet_protocol.taxonomy import SignType
from tests.edge_agent.ota.conftest import BUNDLE, DEVICE, Served
from tests.edge_agent.ota.shadow_models import DEFAULT, golden_frames, reader, worse_bundle
from tests.tuf_repository import bundle_tar
from tests.waiting import wait_until

PREVIOUS = ModelRef(version="1.0.0", sha256="ab" * 32)


def sign(
    box: tuple[float, float, float, float], value: float | None, conf: float = 0.9
) -> SignReading:
    kind = SignType.SPEED_LIMIT if value is not None else SignType.STOP
    return SignReading(
        box, "prohibitory", kind, None, value, "km/h" if value else None, conf, False
    )


LEFT = (10.0, 10.0, 60.0, 60.0)
RIGHT = (200.0, 10.0, 250.0, 60.0)


def test_shadow_detections_pair_with_the_track_they_overlap_most() -> None:
    tracked = [TrackedBox(7, sign(LEFT, 50)), TrackedBox(8, sign(RIGHT, 30))]
    shifted = (14.0, 12.0, 64.0, 62.0)
    far = (400.0, 300.0, 450.0, 350.0)
    paired = pair(tracked, [sign(far, 80), sign(RIGHT, 30), sign(shifted, 50)])
    assert {track: r.box for track, r in paired.items()} == {7: shifted, 8: RIGHT}
    # a detection overlapping a track a little is not the same sign
    assert pair(tracked, [sign((50.0, 50.0, 100.0, 100.0), 50)]) == {}


def test_a_track_counts_when_both_models_read_it_and_agrees_on_type_and_value() -> None:
    tally = ShadowTally()
    frame = [TrackedBox(1, sign(LEFT, 50)), TrackedBox(2, sign(RIGHT, 30))]
    tally.new_frame(frame)
    tally.shadow_frame(frame, [sign(LEFT, 50), sign(RIGHT, 80)])
    numbers = tally.numbers()
    assert (numbers.frames_compared, numbers.tracks_compared, numbers.tracks_agreeing) == (1, 2, 1)
    assert numbers.agreement == 0.5
    # a track the previous model did not see on a sampled frame is not compared
    only_new = [TrackedBox(3, sign((300.0, 300.0, 340.0, 340.0), None))]
    tally.new_frame(only_new)
    tally.shadow_frame(only_new, [])
    assert tally.numbers().tracks_compared == 2


def test_votes_over_frames_decide_what_a_track_reads() -> None:
    tally = ShadowTally()
    # the new model reads 50 on three frames and 80 on one unsure one: it says 50
    for value, conf in ((50, 0.9), (80, 0.3), (50, 0.8), (50, 0.7)):
        tally.new_frame([TrackedBox(1, sign(LEFT, value, conf))])
    # an unread (zero-confidence) detection moves nothing
    unread = [TrackedBox(1, sign(LEFT, 80, 0.0))]
    tally.new_frame(unread)
    tally.shadow_frame(unread, [sign(LEFT, 50, 0.6)])
    assert (tally.numbers().tracks_compared, tally.numbers().tracks_agreeing) == (1, 1)
    tally.shadow_frame(unread, [sign(LEFT, 80, 0.9)])  # the previous model now says 80 more
    assert (tally.numbers().tracks_compared, tally.numbers().tracks_agreeing) == (1, 0)


def test_a_low_agreement_rolls_back_only_after_enough_tracks() -> None:
    limits = ProbationLimits(3600, 3, 0.7, 1.5, min_shadow_tracks=10, min_shadow_agreement=0.8)

    def verdict(compared: int, agreeing: int) -> Probation:
        now = HealthNumbers(10, 20, ShadowNumbers(100, compared, agreeing))
        return probation_verdict(
            elapsed_s=60, restarts=0, before=None, now=now, limits=limits
        ).outcome

    assert verdict(9, 0) is Probation.WATCHING  # too few tracks to judge
    assert verdict(10, 7) is Probation.ROLL_BACK
    assert verdict(10, 8) is Probation.WATCHING
    assert verdict(100, 95) is Probation.WATCHING


class _BlockedReader:
    """A previous model that reads only when the test lets it (our ShadowRunner's interface)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def read(self, image: np.ndarray, **_: float) -> list[SignReading]:
        self.calls += 1
        self.go.wait(timeout=30)
        return [sign(LEFT, 50)]


def test_a_busy_shadow_drops_sampled_frames_and_never_holds_the_loop_up() -> None:
    blocked = _BlockedReader()
    runner = ShadowRunner(
        blocked,  # type: ignore[arg-type]
        PREVIOUS,
        every_n_frames=2,
        queue_frames=1,
    ).start()
    try:
        image = np.zeros((64, 64, 3), np.uint8)
        frame = [TrackedBox(1, sign(LEFT, 50))]
        queued = [runner.observe(image, frame) for _ in range(2)]
        wait_until(lambda: blocked.calls == 1, message="the shadow took the first sampled frame")
        started = time.perf_counter()
        queued += [runner.observe(image, frame) for _ in range(18)]
        assert time.perf_counter() - started < 0.5  # 18 frames while the shadow is stuck
        # every 2nd frame sampled: one is being read, one waits, the other eight are dropped
        assert sum(queued) == 2
        assert runner.frames_dropped == 8
        blocked.go.set()
        wait_until(lambda: runner.pending == 0, message="the queued frames were compared")
        report = runner.report()
        assert (report.frames_compared, report.tracks_compared, report.tracks_agreeing) == (2, 1, 1)
        assert report.previous_model == PREVIOUS
    finally:
        blocked.go.set()
        runner.stop()


def agent_on(tmp_path: Path, new: SignReader) -> Agent:
    profile = DeviceProfile.model_validate(
        {"identity": {"device_id": "cam-1"}, "detector": {"backend": "onnxruntime"}}
    )
    return Agent(
        profile,
        device_id="cam-1",
        agent_version="test",
        reader=new,
        sink=JsonLinesSink(io.StringIO(), "cam-1"),
        ocr=None,
        health=HealthMonitor(tmp_path),
    )


def shadow_read(agent: Agent, runner: ShadowRunner, frames: list[np.ndarray]) -> None:
    """Each scene for a few frames, every sampled frame compared before the next."""
    agent.use_shadow(runner)
    index = 0
    for image in frames:
        for _ in range(3):
            agent.process(Frame(image, time.time(), index, 0.0))
            index += 1
            wait_until(lambda: runner.pending == 0, message="the shadow read its frame")
        agent.tracker.flush()  # the next scene's signs are other signs


@pytest.fixture(scope="module")
def worse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return worse_bundle(tmp_path_factory.mktemp("worse") / "bundle")


@pytest.mark.parametrize(("new", "agrees"), [("default", True), ("worse", False)])
def test_the_previous_model_reading_beside_a_real_model_says_whether_it_reads_alike(
    tmp_path: Path, worse: Path, new: str, agrees: bool
) -> None:
    previous = reader(DEFAULT)
    meta = previous.detector.metadata
    runner = ShadowRunner(
        previous, ModelRef(version=meta.version, sha256=meta.sha256), every_n_frames=1
    ).start()
    agent = agent_on(tmp_path, reader(DEFAULT if new == "default" else worse))
    try:
        shadow_read(agent, runner, golden_frames())
        report = agent.health_report(camera=CameraState.OK, frames_dropped=0, outbox=None)
        metrics = {
            m.name: m for m in agent_metrics(agent, outbox=None, frames_dropped=0, link=None)
        }
        assert metrics["roadsign_shadow_frames_dropped_total"].samples[0][1] == 0
    finally:
        agent.use_shadow(None)
    assert report.shadow is not None
    assert report.shadow.previous_model.version == meta.version
    assert report.shadow.frames_compared == 3 * len(golden_frames())
    assert report.shadow.tracks_compared >= 8  # every planted sign of the six scenes
    share = report.shadow.tracks_agreeing / report.shadow.tracks_compared
    limits = ProbationLimits(3600, 3, 0.7, 1.5, min_shadow_tracks=8, min_shadow_agreement=0.8)
    verdict = probation_verdict(
        elapsed_s=60,
        restarts=0,
        before=None,
        now=health_numbers(report, agent.model),
        limits=limits,
    )
    if agrees:
        assert share == 1.0
        assert verdict.outcome is Probation.WATCHING
    else:
        # the speed limits are misread, the stop and yield signs are not
        assert 0 < share < 0.8
        assert verdict.outcome is Probation.ROLL_BACK
        assert verdict.reason.startswith("shadow reading")
    assert runner.frames_dropped == 0
    assert agent.shadow is None
    assert "roadsign_shadow_frames_dropped_total" not in {
        m.name for m in agent_metrics(agent, outbox=None, frames_dropped=0, link=None)
    }


def shadow_profile(served: Served, **ota: object) -> DeviceProfile:
    """A device on the default bundle following `served`, its shadow reading every frame during
    a long probation; `ota` adds or overrides fields of the ota section."""
    root = served.tmp / "root.json"
    root.write_bytes(served.repo.trusted_root())
    return DeviceProfile.model_validate(
        {
            "identity": {"device_id": DEVICE},
            "detector": {"backend": "onnxruntime", "model_dir": str(DEFAULT)},
            "ota": {
                "enabled": True,
                "repository_url": served.url,
                "trusted_root_file": str(root),
                "state_dir": str(served.tmp / "state"),
                "probation_s": 3600,
                "shadow_every_n_frames": 1,
                **ota,
            },
        }
    )


def test_a_model_misreading_what_the_previous_one_reads_rolls_back_by_itself(
    served: Served, worse: Path
) -> None:
    profile = shadow_profile(
        served, probation_min_shadow_tracks=8, probation_min_shadow_agreement=0.8
    )
    shipped = reader(DEFAULT)
    agent = agent_on(served.tmp, shipped)
    stream = io.StringIO()
    boot = boot_model(profile)
    updater = Updater(
        profile,
        device_id=DEVICE,
        sink=JsonLinesSink(stream, DEVICE),
        running=replace(boot.running, version=shipped.detector.metadata.version),
        model=agent.model,
        swap=agent.use_reader,
        health=lambda: agent.last_health,
        boot=boot,
        shadow=agent.use_shadow,
    )
    info = served.repo.add_model(BUNDLE, "2.0.0", bundle_tar(worse))
    served.repo.assign(DEVICE, info, rollout_id="wave-1")
    served.repo.publish()
    # the worse bundle passes its own golden set: only the shadow reading tells
    assert updater.check() == "active"
    assert agent.model.version == "worse-1"
    runner = agent.shadow
    assert runner is not None
    assert runner.previous == ModelRef(
        version=shipped.detector.metadata.version, sha256=shipped.detector.metadata.sha256
    )
    # an agent restarted during the probation reads beside the previous slot again
    resumed: list[ShadowRunner | None] = []
    restarted = Updater(
        profile,
        device_id=DEVICE,
        sink=JsonLinesSink(io.StringIO(), DEVICE),
        running=updater.running,
        model=agent.model,
        swap=agent.use_reader,
        boot=boot_model(profile),
        shadow=resumed.append,
    )
    again = restarted.resume_shadow()
    assert again is not None
    assert resumed == [again]
    assert again.previous == runner.previous
    again.stop()
    shadow_read(agent, runner, golden_frames())
    agent.health_report(camera=CameraState.OK, frames_dropped=0, outbox=None)
    assert updater.watch_probation() == "rolled_back"
    last = json.loads(stream.getvalue().splitlines()[-1])["message"]
    assert last["rollout_id"] == "wave-1"
    assert str(last["detail"]).startswith("shadow reading: the new model reads")
    # the shipped model reads again, without its shadow, and 2.0.0 is not installed again
    assert agent.model.version == shipped.detector.metadata.version
    assert agent.shadow is None
    assert updater.check() == "failed"
