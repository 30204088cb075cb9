"""The device's local API: health, metrics, docs, and reading uploaded images, with bounds."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.api import MAX_BATCH_FILES, LocalApi
from edge_agent.exceptions import AgentError
from edge_agent.metrics import Metric, render
from edge_agent.reading.signs import load_reader
from tests.edge_agent.conftest import write_tiny_bundle


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    server = LocalApi(
        "127.0.0.1",
        0,
        reader=lambda: load_reader(bundle, backend="onnxruntime"),
        health=lambda: {"device_id": "veh-1", "frames": 3},
        metrics=lambda: render(
            [Metric("roadsign_frames_total", "counter", "Frames.", [({"device_id": "veh-1"}, 3)])]
        ),
        max_upload_bytes=200_000,
    ).start()
    yield server
    server.stop()


def _request(
    api: LocalApi,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type") or "", data


def _png(width: int = 200, height: int = 100) -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    return data.tobytes()


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    )
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_health_metrics_and_docs_are_served(api: LocalApi) -> None:
    status, kind, body = _request(api, "GET", "/health")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body)["frames"] == 3
    status, kind, body = _request(api, "GET", "/metrics")
    assert kind.startswith("text/plain")
    assert b'roadsign_frames_total{device_id="veh-1"} 3.0' in body
    assert json.loads(_request(api, "GET", "/openapi.json")[2])["paths"]["/predict"]
    assert b"/predict/batch" in _request(api, "GET", "/docs")[2]
    assert b'type="file"' in _request(api, "GET", "/")[2]


def test_one_image_is_read_in_original_pixels(api: LocalApi) -> None:
    status, _, body = _request(api, "POST", "/predict", _png(), {"Content-Type": "image/png"})
    assert status == 200
    [reading] = json.loads(body)["readings"]
    assert reading["bbox"] == pytest.approx([25, 25, 75, 75], abs=0.1)


def test_a_batch_is_read_file_by_file(api: LocalApi) -> None:
    body, content_type = _multipart([("a.png", _png()), ("b.png", _png(100, 50))])
    status, _, data = _request(api, "POST", "/predict/batch", body, {"Content-Type": content_type})
    assert status == 200
    results = json.loads(data)["results"]
    assert [r["source"] for r in results] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        ("/predict", b"not an image", {"Content-Type": "image/png"}, 415, "not a readable image"),
        ("/predict", b"x" * 300_000, {"Content-Type": "image/png"}, 413, "over the limit"),
        (
            "/predict/batch",
            b"plain",
            {"Content-Type": "multipart/form-data; boundary=zz"},
            400,
            "expected a multipart/form-data body",
        ),
        ("/nowhere", b"", {}, 404, "no POST /nowhere"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    api: LocalApi, path: str, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    got, kind, data = _request(api, "POST", path, body, headers)
    assert (got, kind) == (status, "application/json")
    assert says in json.loads(data)["detail"]


def test_too_many_files_and_missing_length_are_refused(api: LocalApi) -> None:
    body, content_type = _multipart([(f"{i}.png", _png(8, 8)) for i in range(MAX_BATCH_FILES + 1)])
    assert _request(api, "POST", "/predict/batch", body, {"Content-Type": content_type})[0] == 413
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.putrequest("POST", "/predict")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411
    connection.close()


def test_a_taken_port_is_a_clear_error(api: LocalApi) -> None:
    with pytest.raises(AgentError, match="cannot listen"):
        LocalApi(
            "127.0.0.1",
            api.port,
            reader=lambda: None,  # type: ignore[arg-type, return-value]
            health=dict,
            metrics=str,
            max_upload_bytes=1,
        )


def test_metrics_text_escapes_labels_and_special_values() -> None:
    text = render(
        [
            Metric(
                "m", "gauge", 'a "quoted"\nhelp', [({"l": 'x"y'}, float("nan")), ({}, float("inf"))]
            )
        ]
    )
    assert '# HELP m a \\"quoted\\"\\nhelp' in text
    assert 'm{l="x\\"y"} NaN' in text
    assert "m +Inf" in text
