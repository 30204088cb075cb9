"""The local API refuses hostile uploads without paying for them, measured on a real API
process's peak resident memory (``VmHWM``, reset before each request through ``clear_refs``)."""

from __future__ import annotations

import http.client
import json
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.image_header import read_image_header
from tests.conftest import REPO_ROOT
from tests.edge_agent.conftest import png_declaring, write_tiny_bundle

MIB = 2**20
ApiProcess = tuple[int, int]  # pid, port


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), f"the API process said nothing in {timeout_s} s"
    return process.stdout.readline()


@pytest.fixture(scope="module")
def api_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    root = tmp_path_factory.mktemp("api-process")
    profile = root / "profile.yaml"
    profile.write_text("api:\n  port: 0\n  max_upload_mb: 10\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.edge_agent.api_process",
            str(profile),
            str(write_tiny_bundle(root / "bundle")),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process.pid, json.loads(_first_line(process, 60))["port"]
    finally:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        try:
            process.wait(10)
        finally:
            process.kill()
            process.stdout.close()


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_growth(pid: int, action: Callable[[], None]) -> int:
    """How far above its resident size the process's peak rose while `action` ran, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak to the current size
    before = _kib(pid, "VmRSS")
    action()
    return (_kib(pid, "VmHWM") - before) * 1024


def _post(port: int, head: bytes, body: bytes, *, then: int = 0) -> tuple[int, str, bool]:
    """Send `head`, `body` and `then` more zero bytes while reading the answer.

    Returns the status, its detail, and whether the server closed the connection after it.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    failures: list[OSError] = []

    def send() -> None:
        try:
            sock.sendall(head + body)
            chunk = bytes(64 * 1024)
            for _ in range(then // len(chunk)):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:  # the server hung up on the body: what a refusal may do
            failures.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        detail = json.loads(response.read())["detail"]
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        sender.join(30)
        assert not sender.is_alive()
        return response.status, detail, closed
    finally:
        sock.close()


def test_content_length_minus_one_with_5_mib_is_refused_without_reading_the_body(
    api_process: ApiProcess,
) -> None:
    pid, port = api_process
    head = (
        b"POST /predict HTTP/1.1\r\nHost: d\r\nContent-Type: image/png\r\n"
        b"Content-Length: -1\r\n\r\n"
    )
    outcomes: list[tuple[int, str, bool]] = []

    def attack() -> None:
        outcomes.append(_post(port, head, b"", then=5 * MIB))

    attack()  # the first request of its kind pays for code paths run once
    growth = peak_growth(pid, attack)
    for status, detail, closed in outcomes:
        assert (status, closed) == (400, True)
        assert "non-negative integer" in detail
    assert growth < MIB, f"peak RSS grew {growth / MIB:.1f} MiB on a refused 5 MiB body"


def test_a_png_declaring_20000x20000_is_refused_without_allocating_it(
    api_process: ApiProcess,
) -> None:
    pid, port = api_process
    bomb = png_declaring(20_000, 20_000, rows=600)  # 36 MB of rows to decode into 1.2 GB
    assert len(bomb) < 40_000
    assert read_image_header(bomb).pixels == 400_000_000
    head = (
        "POST /predict HTTP/1.1\r\nHost: d\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(bomb)}\r\n\r\n"
    ).encode()
    outcomes: list[tuple[int, str, bool]] = []

    def upload() -> None:
        outcomes.append(_post(port, head, bomb))

    upload()
    growth = peak_growth(pid, upload)
    for status, detail, _ in outcomes:
        assert status == 413
        assert "20000x20000 image (400000000 pixels) is over the limit" in detail
    assert growth < 4 * MIB, f"peak RSS grew {growth / MIB:.1f} MiB on a refused image"
