"""Tiny real model artifacts for the agent's tests, built with the onnx package (no torch),
crafted images whose headers claim more than they carry, and the local API started on them."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_agent.api import LocalApi
from edge_agent.bundle import ModelMetadata, file_sha256, write_metadata
from edge_agent.metrics import Metric, render
from edge_agent.profile import LocalApiConfig
from edge_agent.reading.signs import load_reader
from tests.edge_agent.api_support import TOKEN, Serve

SIGNS = [*(str(i) for i in range(43)), "other"]
SPEEDS = ["none", "30", "50"]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    """Check and write a graph as an opset-17 model any runtime a device carries can read."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def tiny_classifier_onnx(path: Path, size: int = 8) -> Path:
    """A real two-output ONNX classifier: global average pool, then one linear layer per head."""
    rng = np.random.default_rng(0)
    weights = {
        "w_sign": rng.normal(0, 1, (3, len(SIGNS))).astype(np.float32),
        "w_speed": rng.normal(0, 1, (3, len(SPEEDS))).astype(np.float32),
    }
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_sign"], ["sign"]),
        helper.make_node("MatMul", ["flat", "w_speed"], ["speed"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info("sign", TensorProto.FLOAT, ["batch", len(SIGNS)]),
            helper.make_tensor_value_info("speed", TensorProto.FLOAT, ["batch", len(SPEEDS)]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return _save(graph, path)


def tiny_classifier_bundle(directory: Path, size: int = 8) -> Path:
    """The tiny classifier with its sidecar, as training exports it."""
    artifact = tiny_classifier_onnx(directory / "classifier.onnx", size)
    write_metadata(
        ModelMetadata(
            name="tiny",
            version="0.0.1",
            task="classifier",
            format="onnx_fp32",
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            input_size=size,
            outputs={"sign": SIGNS, "speed": SPEEDS},
        ),
        directory,
    )
    return artifact


CATEGORIES = ["prohibitory", "warning", "stop"]


def constant_detector_onnx(
    path: Path,
    size: int,
    boxes: list[tuple[float, float, float, float, int]],
    anchors: int = 16,
    *,
    dynamic: bool = False,
) -> Path:
    """A real ONNX detector that always outputs the given boxes (input pixels, xyxy, class).

    With `dynamic` it takes any input height and width, as training exports detectors.

    Its graph has YOLOv8's shape: a convolution, then a Detect-like head scope ``/model.22/``
    whose Sigmoid scores are concatenated with box coordinates into (1, 4 + classes, anchors).
    """
    rng = np.random.default_rng(0)
    xywh = np.zeros((1, 4, anchors), np.float32)
    logits = np.full((1, len(CATEGORIES), anchors), -12.0, np.float32)
    for i, (x1, y1, x2, y2, cls) in enumerate(boxes):
        xywh[0, :, i] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        logits[0, cls, i] = 4.0  # sigmoid ~0.98
    # The other anchors hold boxes anywhere on the input, as a real head's do: coordinates up to
    # the input size share the head's output tensor with the 0-1 scores.
    xywh[0, :, len(boxes) :] = rng.uniform(size / 2, size, (4, anchors - len(boxes)))
    conv = rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32)
    inits = {
        "conv_w": conv,
        "box_const": xywh,
        "logit_const": logits,
        "zero": np.zeros((1,), np.float32),
    }
    nodes = [
        helper.make_node(
            "Conv", ["images", "conv_w"], ["features"], name="/model.0/conv/Conv", pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "ReduceMean", ["features"], ["mean"], name="/model.0/ReduceMean", keepdims=0
        ),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"], name="/model.22/Mul"),
        helper.make_node("Add", ["box_const", "nothing"], ["box"], name="/model.22/Add"),
        helper.make_node("Add", ["logit_const", "nothing"], ["logit"], name="/model.22/Add_1"),
        helper.make_node("Sigmoid", ["logit"], ["score"], name="/model.22/Sigmoid"),
        helper.make_node("Concat", ["box", "score"], ["output0"], name="/model.22/Concat", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-detector",
        [
            helper.make_tensor_value_info(
                "images",
                TensorProto.FLOAT,
                [1, 3, "height", "width"] if dynamic else [1, 3, size, size],
            )
        ],
        [
            helper.make_tensor_value_info(
                "output0", TensorProto.FLOAT, [1, 4 + len(CATEGORIES), anchors]
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return _save(graph, path)


def detector_sidecar(
    artifact: Path, size: int, model_format: str = "onnx_fp32", *, stride: int | None = None
) -> Path:
    """Give `artifact` the sidecar training writes for detectors."""
    write_metadata(
        ModelMetadata(
            name="constant",
            version="0.0.1",
            task="detector",
            format=model_format,
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            input_size=size,
            stride=stride,
            outputs={"boxes": CATEGORIES},
        ),
        artifact.parent,
    )
    return artifact


def write_tiny_bundle(directory: Path, size: int = 64) -> Path:
    """A bundle folder: a constant ONNX INT8 detector (a prohibitory sign) and a tiny classifier."""
    detector_sidecar(
        constant_detector_onnx(
            directory / "detector" / "onnx_int8" / "model.onnx", size, [(8, 24, 24, 40, 0)]
        ),
        size,
        "onnx_int8",
    )
    tiny_classifier_bundle(directory / "classifier")
    (directory / "bundle.json").write_text(
        '{"name": "tiny", "version": "1", "classifier": "classifier/classifier.onnx", '
        '"detector": {"onnx_int8": "detector/onnx_int8/model.onnx"}}'
    )
    return directory


def missing_onnx_provider() -> str:
    """An execution provider a profile may name that this ONNX Runtime build lacks (else skip)."""
    lacking = [
        p
        for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        if p not in ort.get_available_providers()
    ]
    if not lacking:
        pytest.skip("this ONNX Runtime build has every provider a profile can name")
    return lacking[0]


def noise_drive(path: Path, frames: int = 30) -> Path:
    """A real MPEG-4 video of random 200x100 frames at 15 fps, for the constant detector."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15, (200, 100))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
    writer.release()
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, rows: int = 1, ihdr_length: int = 13) -> bytes:
    """A PNG whose IHDR claims `width` x `height` (8-bit RGB) and whose IDAT holds `rows` rows
    of zeros (deflate shrinks each ~1000-fold: 600 rows of 20,000 pixels fit in 35 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)[:ihdr_length]
    row, packer = bytes(1 + 3 * width), zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start LocalApi with the tiny bundle and a profile ``api`` section made of `fields`."""
    bundle = write_tiny_bundle(tmp_path / "bundle")
    started: list[LocalApi] = []

    def start(**fields: object) -> LocalApi:
        server = LocalApi(
            LocalApiConfig.model_validate({"port": 0, "max_upload_mb": 0.2, **fields}),
            reader=lambda: load_reader(bundle, backend="onnxruntime"),
            health=lambda: {"device_id": "veh-1", "frames": 3},
            metrics=lambda: render(
                [
                    Metric(
                        "roadsign_frames_total", "counter", "Frames.", [({"device_id": "veh-1"}, 3)]
                    )
                ]
            ),
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def api(serve: Serve) -> LocalApi:
    """The local API with the `serve` defaults."""
    return serve()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file holding `TOKEN`."""
    path = tmp_path / "api-token"
    path.write_text(TOKEN + "\n")
    return path
