"""The loop on a real video: a reading says when its sign was seen, health what decoding cost."""

from __future__ import annotations

import io
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.agent import Agent, JsonLinesSink
from edge_agent.health import HealthMonitor
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import load_reader
from edge_agent.sources import FrameGrabber
from edge_agent.sources.video import VideoFileSource
from fleet_protocol.codec import decode_device_message
from fleet_protocol.messages import HealthReport, PipelineStage, Reading
from tests.edge_agent.conftest import noise_drive, write_tiny_bundle

FRAMES = 10
SEEN_FROM = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
REPORTED_AT = SEEN_FROM + timedelta(hours=1)


def _drive(tmp_path: Path) -> list[Reading | HealthReport]:
    """A real video through the real loop: frame i seen at SEEN_FROM + i s, reports an hour on."""
    # The constant detector shows one sign in every frame; confirm_frames above the drive's
    # length holds its reading back until the drive ends, FRAMES seconds after it was first seen.
    profile = DeviceProfile.model_validate(
        {"reading": {"confirm_frames": 100, "min_confidence": 0.0}, "reporting": {"sink": "stdout"}}
    )
    out = io.StringIO()
    agent = Agent(
        profile,
        device_id="loop-test",
        agent_version="test",
        reader=load_reader(write_tiny_bundle(tmp_path / "bundle"), backend="onnxruntime"),
        sink=JsonLinesSink(out, "loop-test"),
        ocr=None,
        health=HealthMonitor(tmp_path),
        clock=lambda: REPORTED_AT,
    )
    seen = itertools.count(SEEN_FROM.timestamp(), 1.0)
    source = VideoFileSource(noise_drive(tmp_path / "drive.mp4", FRAMES), clock=lambda: next(seen))
    grabber = FrameGrabber(source, fps_cap=240).start()
    try:
        assert agent.run(grabber, threading.Event()) == FRAMES
    finally:
        grabber.stop()
    messages = []
    for line in out.getvalue().splitlines():
        item = json.loads(line)
        _, message = decode_device_message(item["topic"], json.dumps(item["message"]).encode())
        assert isinstance(message, Reading | HealthReport)
        messages.append(message)
    return messages


def test_a_reading_carries_when_its_sign_was_seen_not_when_it_was_reported(
    tmp_path: Path,
) -> None:
    [reading] = [m for m in _drive(tmp_path) if isinstance(m, Reading)]
    assert reading.frames_seen == FRAMES
    # Stamped with the capture time of the frame of its best view, one of the drive's frames.
    assert reading.timestamp in {SEEN_FROM + timedelta(seconds=i) for i in range(FRAMES)}


def test_the_health_report_measures_decoding_a_real_video(tmp_path: Path) -> None:
    health = [m for m in _drive(tmp_path) if isinstance(m, HealthReport)]
    assert health[-1].timestamp == REPORTED_AT
    stages = health[-1].stage_latency_ms
    assert stages[PipelineStage.DECODE].p50_ms > 0
    assert stages[PipelineStage.TOTAL].p50_ms > stages[PipelineStage.DECODE].p50_ms
