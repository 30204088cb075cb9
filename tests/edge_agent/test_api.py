"""The device's local API: health, metrics, docs, and reading uploaded images, with bounds on
what a client may send and who may ask (how long it may take and how many are served at once:
`test_api_slow_clients`)."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.api import MAX_BATCH_FILES, LocalApi
from edge_agent.cli import main
from edge_agent.exceptions import AgentError
from edge_agent.metrics import Metric, render
from edge_agent.profile import DeviceProfile, LocalApiConfig
from fleet_protocol.config_files import InvalidConfigError, load_config
from tests.edge_agent.api_support import TOKEN, Serve, http_request, raw_exchange
from tests.edge_agent.conftest import png_declaring


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
    status, kind, body = http_request(api, "GET", "/health")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body)["frames"] == 3
    status, kind, body = http_request(api, "GET", "/metrics")
    assert kind.startswith("text/plain")
    assert b'roadsign_frames_total{device_id="veh-1"} 3.0' in body
    assert json.loads(http_request(api, "GET", "/openapi.json")[2])["paths"]["/predict"]
    assert b"/predict/batch" in http_request(api, "GET", "/docs")[2]
    assert b'type="file"' in http_request(api, "GET", "/")[2]


def test_one_image_is_read_in_original_pixels(api: LocalApi) -> None:
    status, _, body = http_request(api, "POST", "/predict", _png(), {"Content-Type": "image/png"})
    assert status == 200
    [reading] = json.loads(body)["readings"]
    assert reading["bbox"] == pytest.approx([25, 25, 75, 75], abs=0.1)


def test_a_batch_is_read_file_by_file(api: LocalApi) -> None:
    body, content_type = _multipart([("a.png", _png()), ("b.png", _png(100, 50))])
    status, _, data = http_request(
        api, "POST", "/predict/batch", body, {"Content-Type": content_type}
    )
    assert status == 200
    results = json.loads(data)["results"]
    assert [r["source"] for r in results] == ["a.png", "b.png"]
    assert all(len(r["readings"]) == 1 for r in results)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        ("/predict", b"not an image", {"Content-Type": "image/png"}, 415, "not a PNG or JPEG"),
        ("/predict", _png()[:40], {"Content-Type": "image/png"}, 415, "not a readable image"),
        ("/predict", b"x" * 300_000, {"Content-Type": "image/png"}, 413, "over the limit"),
        (
            "/predict",
            png_declaring(8000, 5000),
            {"Content-Type": "image/png"},
            413,
            "upload: a 8000x5000 image (40000000 pixels) is over the limit of 33177600 pixels",
        ),
        (
            "/predict/batch",
            b"plain",
            {"Content-Type": "multipart/form-data; boundary=zz"},
            400,
            "no opening boundary",
        ),
        ("/predict/batch", _png(), {"Content-Type": "image/png"}, 400, "expected a multipart"),
        ("/nowhere", b"", {}, 404, "no POST /nowhere"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    api: LocalApi, path: str, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    got, kind, data = http_request(api, "POST", path, body, headers)
    assert (got, kind) == (status, "application/json")
    assert says in json.loads(data)["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        (b"", 411, "Content-Length is required"),
        (b"Content-Length: -1\r\n", 400, "non-negative integer, not '-1'"),
        (b"Content-Length: 12abc\r\n", 400, "non-negative integer"),
        (b"Content-Length: +5\r\n", 400, "non-negative integer"),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400, "conflicting Content-Length"),
        (b"Content-Length: 209716\r\n", 413, "over the limit of 209715"),
        (b"Content-Length: " + b"9" * 40 + b"\r\n", 413, "over the limit"),
        (b"Transfer-Encoding: chunked\r\n", 411, "Transfer-Encoding is not accepted"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 411, "Transfer-Encoding"),
    ],
)
def test_a_missing_lying_or_too_large_length_is_refused_from_the_headers_alone(
    api: LocalApi, headers: bytes, status: int, says: str
) -> None:
    # No body is sent: each answer must come from the headers, without waiting for one.
    got, answer_headers, data = raw_exchange(
        api.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n" + headers + b"\r\n",
    )
    assert (got, answer_headers["connection"]) == (status, "close")
    assert says in json.loads(data)["detail"]


def test_too_many_files_in_a_batch_are_refused(api: LocalApi) -> None:
    body, content_type = _multipart([(f"{i}.png", _png(8, 8)) for i in range(MAX_BATCH_FILES + 1)])
    status, _, data = http_request(
        api, "POST", "/predict/batch", body, {"Content-Type": content_type}
    )
    assert status == 413
    assert f"at most {MAX_BATCH_FILES} files" in json.loads(data)["detail"]


def test_a_batch_file_over_the_file_limit_is_refused(serve: Serve) -> None:
    api = serve(max_upload_mb=0.01, max_batch_mb=1)
    body, content_type = _multipart([("a.png", _png(8, 8)), ("big.png", b"x" * 20_000)])
    status, _, data = http_request(
        api, "POST", "/predict/batch", body, {"Content-Type": content_type}
    )
    assert status == 413
    assert "part big.png is over the limit of 10485 bytes per file" in json.loads(data)["detail"]


def test_a_batch_stops_at_a_part_over_the_pixel_limit_before_the_rest_is_sent(
    api: LocalApi,
) -> None:
    body, content_type = _multipart(
        [("a.png", _png()), ("bomb.png", png_declaring(20_000, 20_000)), ("c.png", _png())]
    )
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    # Everything up to the third part's file name: the bomb's part is complete, c.png is not.
    sent = body[: body.index(b'filename="c.png"')]
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head + sent)
        response = http.client.HTTPResponse(sock)
        response.begin()  # answered while the request is still incomplete: it streams
        detail = json.loads(response.read())["detail"]
    assert response.status == 413
    assert detail.startswith("bomb.png: a 20000x20000 image (400000000 pixels) is over")


def test_beyond_loopback_every_data_route_needs_the_token(serve: Serve, token_file: Path) -> None:
    api = serve(host="0.0.0.0", token_file=str(token_file))  # noqa: S104 - the case under test
    png = {"Content-Type": "image/png"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-of-enough-length"},
        {"Authorization": TOKEN},
    ):
        for method, path, body in (
            ("GET", "/health", None),
            ("GET", "/metrics", None),
            ("POST", "/predict", _png()),
        ):
            status, _, data = http_request(api, method, path, body, {**png, **headers})
            assert status == 401, (method, path, headers)
            assert "Bearer" in json.loads(data)["detail"]
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request("GET", "/health")
    assert connection.getresponse().getheader("WWW-Authenticate") == 'Bearer realm="roadsign-agent"'
    connection.close()
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert http_request(api, "GET", "/health", None, right)[0] == 200
    assert http_request(api, "POST", "/predict", _png(), {**png, **right})[0] == 200
    # The constant pages hold no device data: the upload page must load to take the token.
    for page in ("/", "/docs", "/openapi.json"):
        assert http_request(api, "GET", page)[0] == 200


def test_a_request_without_the_token_is_refused_before_its_body_is_read(
    serve: Serve, token_file: Path
) -> None:
    api = serve(token_file=str(token_file))
    # A body is announced and never sent: the 401 must not wait for it.
    status, headers, _ = raw_exchange(
        api.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="roadsign-agent"')


def test_a_profile_beyond_loopback_without_a_token_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "rsu.yaml"
    profile.write_text("api:\n  host: 0.0.0.0\n  port: 8088\n")
    with pytest.raises(InvalidConfigError) as caught:
        load_config(DeviceProfile, profile)
    [problem] = caught.value.problems
    assert problem.field == "api.token_file"
    assert "beyond loopback" in problem.message
    assert main(["validate-config", str(profile)]) == 1
    assert "api.token_file" in capsys.readouterr().out
    # The same profile passes once the token file is named, in it or from the environment.
    monkeypatch.setenv("ROADSIGN_AGENT__API__TOKEN_FILE", "/etc/roadsign/api-token")
    assert main(["validate-config", str(profile)]) == 0
    loaded = load_config(
        DeviceProfile,
        profile,
        env={"ROADSIGN_AGENT__API__TOKEN_FILE": "/t"},
        env_prefix="ROADSIGN_AGENT__",
    )
    assert loaded.api.token_file == Path("/t")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert LocalApiConfig(host=host).token_file is None


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.10.5", "rsu.local"])  # noqa: S104
def test_every_other_address_needs_a_token(host: str) -> None:
    with pytest.raises(ValueError, match="beyond loopback"):
        LocalApiConfig(host=host)
    assert LocalApiConfig(host=host, enabled=False).token_file is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read api.token_file"),
        ("short\n", "holds 5 characters"),
        ("two words here ok!", "holds spaces"),
    ],
)
def test_an_unusable_token_file_is_a_clear_error(
    serve: Serve, tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AgentError, match=says):
        serve(token_file=str(path))


def test_a_taken_port_is_a_clear_error(api: LocalApi) -> None:
    with pytest.raises(AgentError, match="cannot listen"):
        LocalApi(
            LocalApiConfig(port=api.port),
            reader=lambda: None,  # type: ignore[arg-type, return-value]
            health=dict,
            metrics=str,
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
