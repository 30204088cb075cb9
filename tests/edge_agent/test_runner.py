"""``roadsign-agent run``: a recorded drive through the whole pipeline to each kind of sink."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge_agent.cli import main
from edge_agent.ota.client import basic_authorization
from edge_agent.outbox import Outbox
from edge_agent.profile import DeviceProfile
from edge_agent.runner import (
    apply_overrides,
    profile_reader,
    repository_authorization,
    resolve_device_id,
)
from fleet_protocol.codec import decode_device_message
from fleet_protocol.messages import HealthReport, Reading
from tests.edge_agent.conftest import (
    constant_detector_onnx,
    detector_sidecar,
    missing_onnx_provider,
    noise_drive,
    write_tiny_bundle,
)
from tests.edge_agent.test_mqtt_link import DEVICE, Subscriber
from tests.mosquitto import Broker, free_port
from tests.waiting import wait_until


def _profile(tmp_path: Path, **reporting: object) -> Path:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    profile = {
        "profile": "test",
        "identity": {"device_id": DEVICE},
        # The tiny detector finds its one constant box in any view: in tiles it would be many.
        "detector": {
            "backend": "onnxruntime",
            "model_dir": str(bundle),
            "threads": 1,
            "tiling": {"enabled": False},
        },
        "camera": {"source": str(noise_drive(tmp_path / "drive.mp4")), "fps_cap": 240},
        "reading": {"min_confidence": 0.0, "confirm_frames": 3},
        "reporting": {"health_interval_s": 1, "include_crops": True, **reporting},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "api": {"enabled": False},
    }
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_a_drive_to_a_jsonl_file_gives_one_reading_per_sign_and_health(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert (
        main(["run", "--config", str(_profile(tmp_path)), "--sink", "file", "--output", str(out)])
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    messages = [
        decode_device_message(line["topic"], json.dumps(line["message"]).encode())[1]
        for line in lines
    ]
    readings = [m for m in messages if isinstance(m, Reading)]
    health = [m for m in messages if isinstance(m, HealthReport)]
    assert len(readings) == 1  # the constant detector shows one sign for the whole drive
    assert readings[0].frames_seen == 3
    # The crop is the sign's own pixels (the reported box, within the 200 x 100 frame), as JPEG.
    assert readings[0].crop_jpeg is not None
    crop = cv2.imdecode(np.frombuffer(readings[0].crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = readings[0].bbox
    box_px = (min(math.ceil(y2), 100) - max(int(y1), 0), min(math.ceil(x2), 200) - max(int(x1), 0))
    assert max(box_px) <= 96  # within reporting.crop_max_px: not shrunk
    assert crop is not None
    assert crop.shape == (*box_px, 3)
    assert health
    assert health[-1].camera_state == "stopped"
    assert set(health[-1].stage_latency_ms) >= {"detect", "classify", "total"}
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_a_drive_over_mqtt_arrives_and_the_agent_says_goodbye(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker)
    try:
        profile = _profile(tmp_path)
        data = yaml.safe_load(profile.read_text())
        data["broker"] = {"url": broker.url}
        profile.write_text(yaml.safe_dump(data))
        assert main(["run", "--config", str(profile), "--sink", "mqtt"]) == 0
        # The shutdown status goes out after the outbox drained: every reading is in by then.
        wait_until(lambda: subscriber.last_reason() == "shutdown", 15, "the shutdown status")
        readings = subscriber.readings()
        assert len(readings) == 1  # the constant detector shows one sign for the whole drive
        assert readings[0].frames_seen == 3
        assert Outbox(tmp_path / "outbox.sqlite3", max_messages=10, max_bytes=10**6).depth == 0
    finally:
        subscriber.close()
        broker.stop()


@contextlib.contextmanager
def _agent_on_a_long_drive(
    tmp_path: Path, broker: Broker, **sections: dict[str, object]
) -> Iterator[subprocess.Popen[bytes]]:
    """``roadsign-agent run`` in its own process on a drive that lasts well past any signal.

    `sections` update the test profile's sections. The agent's log is in ``agent.log``.
    """
    profile = _profile(tmp_path)
    data = yaml.safe_load(profile.read_text())
    data["broker"] = {"url": broker.url}
    frames = tmp_path / "frames"
    frames.mkdir()
    # A recorded source is read as fast as the pipeline goes (fps_cap paces live ones only):
    # it must last well past the signal. 3,000 tiny frames ended within a second or two, and the
    # signal then hit a process already shutting down with the default handler back (-15).
    for i in range(20_000):
        if i < 2:
            cv2.imwrite(str(frames / f"{i:05d}.png"), np.zeros((480, 640, 3), np.uint8))
        else:
            (frames / f"{i:05d}.png").hardlink_to(frames / "00001.png")
    data["camera"] = {"source": str(frames), "fps_cap": 30}
    for name, changes in sections.items():
        data[name] = {**data.get(name, {}), **changes}
    profile.write_text(yaml.safe_dump(data))
    with (tmp_path / "agent.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(profile)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_sigterm_flushes_and_publishes_offline(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker)
    try:
        with _agent_on_a_long_drive(tmp_path, broker) as process:
            wait_until(lambda: any(s.state == "online" for s in subscriber.statuses()), 30, "birth")
            # Running, not merely connected: a loaded machine can take seconds to the first frame.
            wait_until(lambda: subscriber.readings(), 60, "the first reading")
            assert process.poll() is None, "the drive ended before the signal: it proves nothing"
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        wait_until(lambda: subscriber.last_reason() == "shutdown", 15, "the shutdown status")
        assert len(subscriber.readings()) == 1
    finally:
        subscriber.close()
        broker.stop()


def _agent_counters(port: int) -> dict[str, float]:
    """The agent's Prometheus counters from its local API, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, value in re.findall(r"^(roadsign_\w+_total)\{[^}]*\} (\S+)$", text, re.M)
    }


def _frames_so_far(port: int) -> float:
    try:
        return _agent_counters(port).get("roadsign_frames_total", 0.0)
    except OSError:  # the API is not up yet
        return 0.0


def test_sigterm_reports_a_sign_still_in_view_before_exiting(tmp_path: Path) -> None:
    # The constant detector shows the same sign in every frame, 160 px tall: below
    # min_report_px it is confirmed (after 3 frames) but never reported while in view.
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker)
    port = free_port()
    try:
        with _agent_on_a_long_drive(
            tmp_path,
            broker,
            reading={"min_report_px": 1000},
            api={"enabled": True, "port": port},
        ) as process:
            wait_until(lambda: _frames_so_far(port) >= 5, 60, "5 frames read")
            assert _agent_counters(port)["roadsign_readings_total"] == 0  # pending, not sent
            assert process.poll() is None, "the drive ended before the signal: it proves nothing"
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        wait_until(lambda: subscriber.last_reason() == "shutdown", 15, "the shutdown status")
        readings = subscriber.readings()
        assert len(readings) == 1  # the pending track, reported once
        assert readings[0].frames_seen >= 5
    finally:
        subscriber.close()
        broker.stop()


def test_execution_providers_the_runtime_lacks_are_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = missing_onnx_provider()
    profile = _profile(tmp_path)
    data = yaml.safe_load(profile.read_text())
    data["detector"]["execution_providers"] = [missing]
    profile.write_text(yaml.safe_dump(data))
    out = tmp_path / "out.jsonl"
    assert main(["run", "--config", str(profile), "--sink", "file", "--output", str(out)]) == 1
    error = capsys.readouterr().err
    assert "detector.execution_providers" in error
    assert missing in error
    assert not out.exists() or "/readings" not in out.read_text()


def test_device_id_falls_back_to_a_cleaned_host_name() -> None:
    assert resolve_device_id(DeviceProfile(), "cam box #3.local") == "cam-box--3.local"
    assert resolve_device_id(DeviceProfile(), "_x") == "x"


def test_overrides_are_validated_with_the_profile(tmp_path: Path) -> None:
    profile = DeviceProfile()
    changed = apply_overrides(profile, source="clip.mp4", sink="stdout", output=None)
    assert (changed.camera.source, changed.reporting.sink) == ("clip.mp4", "stdout")
    with pytest.raises(ValueError, match="output_file"):
        apply_overrides(profile, source=None, sink="file", output=None)


def test_a_bad_profile_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("camera:\n  fps_cap: 0\n")
    assert main(["run", "--config", str(bad)]) == 1
    assert "camera.fps_cap" in capsys.readouterr().err


def test_a_profile_asking_for_another_input_size_than_the_bundle_has_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _profile(tmp_path)
    profile = yaml.safe_load(path.read_text())
    profile["detector"]["input_size"] = 640  # the tiny bundle's detector takes 64 px
    path.write_text(yaml.safe_dump(profile))
    assert main(["run", "--config", str(path), "--sink", "stdout"]) == 1
    err = capsys.readouterr().err
    assert "detector.input_size is 640" in err
    assert "takes 64 px" in err
    profile["detector"]["input_size"] = None
    path.write_text(yaml.safe_dump(profile))
    assert main(["run", "--config", str(path), "--sink", "stdout", "--max-frames", "3"]) == 0


def test_the_local_api_reads_with_the_artifact_the_profile_names(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    # A second detector format in the same bundle that sees its sign elsewhere.
    detector_sidecar(
        constant_detector_onnx(
            bundle / "detector" / "onnx_fp32" / "model.onnx", 64, [(30, 8, 50, 28, 0)]
        ),
        64,
        "onnx_fp32",
    )
    index = json.loads((bundle / "bundle.json").read_text())
    index["detector"]["onnx_fp32"] = "detector/onnx_fp32/model.onnx"
    (bundle / "bundle.json").write_text(json.dumps(index))
    profile = DeviceProfile.model_validate(
        {
            "detector": {
                "model_dir": str(bundle),
                "backend": "onnxruntime",
                "model_format": "onnx_fp32",
            }
        }
    )
    reader = profile_reader(profile, threads=1)
    assert reader.detector.metadata.format == "onnx_fp32"
    (reading,) = reader.read(np.full((64, 64, 3), 128, np.uint8))
    assert [round(v) for v in reading.box] == [30, 8, 50, 28]


def test_the_repository_is_read_with_the_broker_user_and_password_file(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")  # as enrolment writes it, with a line end
    broker = {"password_file": str(password)}
    profile = DeviceProfile.model_validate({"broker": broker})
    assert repository_authorization(profile, "cam-1") == basic_authorization("cam-1", "s3cret")
    named = DeviceProfile.model_validate({"broker": {**broker, "username": "fleet-cam-1"}})
    assert repository_authorization(named, "cam-1") == basic_authorization("fleet-cam-1", "s3cret")
    assert repository_authorization(DeviceProfile(), "cam-1") is None  # an open broker and repo


def test_under_systemd_the_agent_says_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    out = tmp_path / "out.jsonl"
    config = str(_profile(tmp_path))
    with notify:
        assert main(["run", "--config", config, "--sink", "file", "--output", str(out)]) == 0
        received = [notify.recv(64).decode() for _ in range(3)]
    assert received == ["READY=1", "WATCHDOG=1", "STOPPING=1"]
