"""The shipped bundle (models/default) on real photos and on a rendered drive, as devices run it."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent, JsonLinesSink
from edge_agent.cli import main
from edge_agent.health import HealthMonitor
from edge_agent.ocr import create_ocr
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader, load_reader
from edge_agent.runner import profile_reader
from edge_agent.sources import FrameGrabber
from edge_agent.sources.video import VideoFileSource
from tests.conftest import REPO_ROOT, SHARED_DATA
from training.data.drive import DriveSettings, render_drive
from training.data.shared_sets import ensure_unpacked, read_gtsdb_real_world

BUNDLE = REPO_ROOT / "models" / "default"
needs_bundle = pytest.mark.skipif(not (BUNDLE / "bundle.json").exists(),
                                  reason="models/default is not built yet")  # fmt: skip


@needs_bundle
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_predict_reads_the_speed_on_at_least_12_of_the_17_real_photos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = read_gtsdb_real_world(ensure_unpacked(SHARED_DATA, "gtsdb_speed",
                                                   REPO_ROOT / ".cache" / "data"))  # fmt: skip
    assert main(["predict", *(str(p.path) for p in photos), "--model", str(BUNDLE)]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    correct = 0
    for photo, result in zip(photos, results, strict=True):
        speeds = [r["value"] for r in result["readings"] if r["sign_type"] == "speed_limit"]
        correct += bool(speeds) and speeds[0] == photo.speed_kmh
    assert correct >= 12, f"{correct} of 17"


def _drive_readings(tmp_path: Path, profile: DeviceProfile, reader: SignReader) -> list[Any]:
    """The readings an agent with `reader` sends for the drive rendered at tmp_path/drive.mp4."""
    output = tmp_path / "out.jsonl"
    with output.open("w") as stream:
        agent = Agent(profile, device_id="drive-test", agent_version="test", reader=reader,
                      sink=JsonLinesSink(stream, "drive-test"), ocr=create_ocr("tesserocr"),
                      health=HealthMonitor(tmp_path))  # fmt: skip
        grabber = FrameGrabber(VideoFileSource(tmp_path / "drive.mp4"), fps_cap=240).start()
        agent.run(grabber, threading.Event())
        grabber.stop()
    return [json.loads(line)["message"] for line in output.read_text().splitlines()
            if line and "/readings" in json.loads(line)["topic"]]  # fmt: skip


@needs_bundle
@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_a_drive_past_k_signs_yields_exactly_k_readings(tmp_path: Path, seed: int) -> None:
    signs = render_drive(tmp_path / "drive.mp4", 6, seed=seed)
    profile = DeviceProfile.model_validate({"reading": {"confirm_frames": 3},
                                            "reporting": {"sink": "stdout"}})  # fmt: skip
    readings = _drive_readings(tmp_path, profile, load_reader(BUNDLE, backend="openvino",
                                                              threads=2))  # fmt: skip
    assert len(readings) == len(signs), readings


@needs_bundle
@pytest.mark.slow
def test_a_1280x720_dashcam_drive_is_read_through_tiles_one_reading_per_sign(
    tmp_path: Path,
) -> None:
    # A 1280x720 camera with the 640x480 drive's field of view (twice its focal length).
    dashcam = replace(DriveSettings(), width=1280, height=720, focal_px=1120.0)
    signs = render_drive(tmp_path / "drive.mp4", 4, settings=dashcam, seed=5)
    profile = DeviceProfile.model_validate(
        {
            "detector": {"model_dir": str(BUNDLE), "backend": "openvino"},
            "reporting": {"sink": "stdout"},
        }
    )
    reader = profile_reader(profile, threads=2)  # as the device builds it: the profile's tiling
    assert reader.tiling.tiles_frame(1280, 720, reader.detector.metadata.input_size)
    readings = _drive_readings(tmp_path, profile, reader)
    assert len(readings) == len(signs), readings
    speeds = sorted(r["value"] for r in readings if r["sign_type"] == "speed_limit")
    assert speeds == sorted(float(s.value or 0) for s in signs if s.kind == "speed"), readings
