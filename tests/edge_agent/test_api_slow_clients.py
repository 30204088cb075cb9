"""The local API against slow, stalled, cut-short, oversized and too many clients: who holds one
of its workers, for how long, and what a client that holds the token gets meanwhile."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

from edge_agent.api import LocalApi
from edge_agent.api_intake import MAX_HEAD_BYTES, MAX_WAITING
from tests.edge_agent.api_support import (
    TOKEN,
    Serve,
    closed_by_server,
    http_request,
    raw_exchange,
)
from tests.edge_agent.conftest import PNG_SIGNATURE
from tests.waiting import wait_until


def _dribble_until_dropped(port: int, stop: threading.Event) -> float | None:
    """Send a head a byte every 50 ms, never ending it: seconds until the server hung up, or
    None if `stop` came first."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.0\r\nX-Slow: ")
        while not stop.wait(0.05):  # the slow client's pace: the behaviour under test
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - opened
            if closed_by_server(sock):
                return time.monotonic() - opened
    return None


def test_a_client_sending_its_headers_byte_by_byte_is_dropped_at_the_header_deadline(
    serve: Serve,
) -> None:
    api = serve(header_timeout_s=1.0, timeout_s=30)  # the body's budget plays no part
    request = b"GET /health HTTP/1.0\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        started, dropped = time.monotonic(), False
        for byte in request:
            # The slow client's pace (the behaviour under test): a byte every 50 ms keeps any
            # per-read timeout from firing; only a deadline for the whole head ends it.
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
            if dropped or closed_by_server(sock):
                dropped = True
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert dropped, "the server still waited after 200 bytes over 10 s"
    assert 0.9 < elapsed < 3


def test_a_client_stalling_mid_body_is_dropped_within_the_timeout(serve: Serve) -> None:
    api = serve(timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        assert sock.recv(1) == b""  # blocks until the server hangs up (or the 10 s timeout)
        assert time.monotonic() - started < 3


def test_a_body_cut_short_of_its_content_length_is_a_400_not_an_image(api: LocalApi) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        head = b"POST /predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head + PNG_SIGNATURE + b"\0\0")
        sock.shutdown(socket.SHUT_WR)  # the client is done: 990 bytes never come
        response = http.client.HTTPResponse(sock)
        response.begin()
        detail = json.loads(response.read())["detail"]
    assert (response.status, detail) == (400, "the body ended before its Content-Length")


def test_connections_beyond_the_worker_cap_get_503_at_once(serve: Serve) -> None:
    api = serve(max_workers=2)
    held = [socket.create_connection(("127.0.0.1", api.port), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            # Headers in, so a worker takes it; the rest of its body never comes.
            sock.sendall(b"POST /predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        wait_until(
            lambda: raw_exchange(api.port, b"GET /health HTTP/1.0\r\n\r\n")[0] == 503,
            message="both workers taken",
        )
        started = time.monotonic()
        status, headers, body = raw_exchange(api.port, b"GET /health HTTP/1.0\r\n\r\n")
        assert (status, headers["retry-after"]) == (503, "1")
        assert "2 requests in progress" in json.loads(body)["detail"]
        assert time.monotonic() - started < 2
    finally:
        held[0].close()
    try:
        wait_until(
            lambda: raw_exchange(api.port, b"GET /health HTTP/1.0\r\n\r\n")[0] == 200,
            timeout=10,
            message="the freed slot taken again",
        )
    finally:
        held[1].close()


def test_dribbling_header_clients_are_dropped_at_the_deadline_and_a_token_holder_still_gets_200(
    serve: Serve, token_file: Path
) -> None:
    api = serve(
        host="0.0.0.0",  # noqa: S104 - the LAN case under test
        token_file=str(token_file),
        max_workers=2,
        header_timeout_s=0.5,
    )
    stop, lifetimes, statuses = threading.Event(), list[float](), list[int]()

    def attack() -> None:  # reconnects at once each time it is dropped
        while not stop.is_set():
            if (lifetime := _dribble_until_dropped(api.port, stop)) is not None:
                lifetimes.append(lifetime)

    attackers = [threading.Thread(target=attack) for _ in range(4)]  # twice the workers
    for attacker in attackers:
        attacker.start()

    def asked_while_attackers_came_back() -> bool:
        statuses.append(
            http_request(api, "GET", "/health", None, {"Authorization": f"Bearer {TOKEN}"})[0]
        )
        return len(lifetimes) >= 2 * len(attackers)

    try:
        wait_until(
            asked_while_attackers_came_back, message="each dribbler dropped twice on average"
        )
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join()
    assert set(statuses) == {200}, f"{statuses.count(503)} of {len(statuses)} were refused"
    assert min(lifetimes) > 0.45, lifetimes
    assert max(lifetimes) < 2.0, lifetimes


def test_a_flood_of_connections_without_heads_closes_the_oldest_not_a_new_client(
    serve: Serve,
) -> None:
    api = serve(header_timeout_s=30)  # only room, not time, can end these
    flood = [
        socket.create_connection(("127.0.0.1", api.port), timeout=10) for _ in range(MAX_WAITING)
    ]
    try:
        for sock in flood:
            sock.sendall(b"GET /health HTTP/1.0\r\n")
        assert http_request(api, "GET", "/health")[0] == 200
        wait_until(lambda: closed_by_server(flood[0]), message="the oldest connection closed")
        assert not closed_by_server(flood[-1])
    finally:
        for sock in flood:
            sock.close()


def test_a_head_over_the_limit_is_answered_431_without_waiting_for_its_end(api: LocalApi) -> None:
    start = b"GET /health HTTP/1.0\r\nX-Big: "
    status, _, body = raw_exchange(api.port, start + b"a" * (MAX_HEAD_BYTES - len(start)))
    assert status == 431
    assert f"over the limit of {MAX_HEAD_BYTES} bytes" in json.loads(body)["detail"]
