"""The frame loop's reader swap: frames after `Agent.use_reader` (called from another thread, as
the OTA updater does) are read by the new model, and the agent reports the new model."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent, JsonLinesSink
from edge_agent.bundle import file_sha256
from edge_agent.health import HealthMonitor
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader, load_reader
from edge_agent.sources.base import Frame
from fleet_protocol.messages import ModelRef
from tests.edge_agent.conftest import (
    constant_detector_onnx,
    detector_sidecar,
    tiny_classifier_bundle,
)

SIZE = 64


def bundle(folder: Path, box: tuple[float, float, float, float, int]) -> SignReader:
    """A bundle whose constant detector always finds `box`, as a reader."""
    artifact = constant_detector_onnx(folder / "detector" / "onnx_int8" / "model.onnx", SIZE, [box])
    detector_sidecar(artifact, SIZE, "onnx_int8")
    tiny_classifier_bundle(folder / "classifier")
    (folder / "bundle.json").write_text(
        '{"name": "t", "version": "1", "classifier": "classifier/classifier.onnx", '
        '"detector": {"onnx_int8": "detector/onnx_int8/model.onnx"}}'
    )
    return load_reader(folder, backend="onnxruntime")


def frame(index: int) -> Frame:
    return Frame(np.zeros((SIZE, SIZE, 3), np.uint8), 0.0, index, 0.0)


def test_frames_after_a_swap_are_read_by_the_new_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = bundle(tmp_path / "old", (8, 24, 24, 40, 0))
    new = bundle(tmp_path / "new", (30, 2, 50, 20, 2))
    agent = Agent(
        DeviceProfile.model_validate({"reading": {"min_confidence": 0.0}}),
        device_id="swap-test",
        agent_version="test",
        reader=old,
        sink=JsonLinesSink(io.StringIO(), "swap-test"),
        ocr=None,
        health=HealthMonitor(tmp_path),
    )
    seen: list[str] = []
    real_detect = SignReader.detect

    def spy(self: SignReader, *args: Any, **kwargs: Any) -> Any:
        seen.append("new" if self is new else "old")
        return real_detect(self, *args, **kwargs)

    monkeypatch.setattr(SignReader, "detect", spy)
    agent.process(frame(0))
    model = ModelRef(
        version="2.0.0",
        sha256=file_sha256(tmp_path / "new" / "detector" / "onnx_int8" / "model.onnx"),
    )
    swapper = threading.Thread(target=agent.use_reader, args=(new, model))
    swapper.start()
    swapper.join()
    agent.process(frame(1))
    assert seen == ["old", "new"]
    assert agent.model == model
