"""The device's small local HTTP API, on the standard library alone (no web framework on devices).

``GET /health`` (JSON), ``GET /metrics`` (Prometheus text), ``POST /predict`` (one image, raw
body or a multipart ``file`` field) and ``POST /predict/batch`` (multipart, several files), plus
the constant pages ``/openapi.json``, ``/docs`` and an upload page at ``/`` (`api_docs`).

What a client sends is bounded before it is read, each from the profile's ``api`` section:

- a body needs a Content-Length (411), a plain non-negative integer (400) within the route's
  limit (413), all decided from the headers; chunked bodies get 411. A refused request's body
  is not read, and its connection is closed;
- an image is sized from its header first (`image_header`): over ``max_image_pixels`` is 413,
  anything but PNG and JPEG 415, both before any decoder allocates it. A batch is read part by
  part (`multipart`), each part decoded and read before the next is taken off the socket;
- a connection carries one request (HTTP/1.0). Its head (request line and headers, at most
  `MAX_HEAD_BYTES`) must arrive within ``header_timeout_s``, and is received without a worker
  (`api_intake`); its body then has ``timeout_s``: a slow-loris client is dropped, not waited on;
- at most ``max_workers`` requests whose heads are in are served at once; the next is answered
  503 with Retry-After at once, by the accepting thread, so load never spawns more threads than
  that, and clients that never finish their headers cannot take the workers;
- with ``token_file`` (required beyond loopback), every route but the constant pages needs
  ``Authorization: Bearer <token>``, else 401 (`api_guard`), decided as soon as the head is in.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_agent.api_docs import OPENAPI, UPLOAD_PAGE, docs_page
from edge_agent.api_guard import (
    bearer_matches,
    check_token,
    declared_length,
    is_loopback_host,
    unauthorized,
)
from edge_agent.api_intake import MAX_WAITING, Intake, answer_at_once
from edge_agent.exceptions import AgentError, ApiError, ImageHeaderError
from edge_agent.image_header import ImageHeader, read_image_header
from edge_agent.multipart import CHUNK, boundary_of, iter_parts
from edge_agent.predict import reading_fields
from edge_agent.profile import LocalApiConfig
from edge_agent.reading.signs import SignReader

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 16
MIB = 2**20
CONSTANT_PAGES = frozenset({"/", "/docs", "/openapi.json"})
ROUTES = frozenset(
    {("GET", "/health"), ("GET", "/metrics"), ("POST", "/predict"), ("POST", "/predict/batch")}
    | {("GET", page) for page in CONSTANT_PAGES}
)
# After refusing a body, what the client is still sending is read and dropped for this long,
# and this much at most: enough for the bytes already in flight, so the client reads our answer
# instead of a connection reset; never a drain of the body it announced.
LINGER_S = 1.0
LINGER_BYTES = MIB
RETRY_AFTER_S = 1


def read_token(path: Path) -> str:
    """The bearer token in `path` (surrounding whitespace dropped), or AgentError naming it."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as e:
        raise AgentError(f"cannot read api.token_file {path}: {e}") from e
    try:
        return check_token(text)
    except AgentError as e:
        raise AgentError(f"api.token_file {path} {e}") from e


def checked_header(data: bytes, *, max_pixels: int, source: str) -> ImageHeader:
    """The header of an uploaded image if it may be decoded: 415 if unread, 413 if too large."""
    try:
        header = read_image_header(data)
    except ImageHeaderError as e:
        raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"{source}: {e}") from e
    if header.pixels > max_pixels:
        raise ApiError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{source}: a {header.width}x{header.height} image ({header.pixels} pixels) is over "
            f"the limit of {max_pixels} pixels",
        )
    return header


def decode_image(data: bytes, *, source: str) -> np.ndarray:
    """Uploaded bytes, whose header passed `checked_header`, as an RGB image, or 415."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"{source}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class _ClientClock(io.RawIOBase):
    """A socket's reads, charged to the client's time budget; once it is spent, reads time out.

    What the intake already received (`received`: the head, perhaps more) is read first, free.
    A per-read timeout alone lets a client that sends a byte a second hold a worker for ever.
    """

    def __init__(self, connection: socket.socket, budget_s: float, *, received: bytes) -> None:
        super().__init__()
        self._connection, self.left_s = connection, budget_s
        self._received = memoryview(received)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._received:
            with memoryview(buffer) as target:
                size = min(len(target), len(self._received))
                target[:size] = self._received[:size]
            self._received = self._received[size:]
            return size
        if self.left_s <= 0:
            raise TimeoutError("the client took longer than api.timeout_s to send its body")
        self._connection.settimeout(self.left_s)
        started = time.monotonic()
        try:
            return self._connection.recv_into(buffer)
        finally:
            self.left_s -= time.monotonic() - started


class _Body:
    """A request's body, read no further than its declared Content-Length."""

    def __init__(self, rfile: io.BufferedIOBase, length: int) -> None:
        self._rfile, self.remaining = rfile, length

    def read(self, size: int) -> bytes:
        """Up to `size` bytes, as soon as any arrive; ``b""`` at the end of the body."""
        if self.remaining <= 0:
            return b""
        data = self._rfile.read1(min(size, self.remaining))
        return self._got(data)

    def read_all(self) -> bytes:
        """The whole body."""
        if not self.remaining:
            return b""
        data = self._rfile.read(self.remaining)
        if len(data) < self.remaining:  # read() returns what there was when the client hung up
            raise _ended_early()
        return self._got(data)

    def _got(self, data: bytes) -> bytes:
        if not data:
            raise _ended_early()
        self.remaining -= len(data)
        return data


def _ended_early() -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, "the body ended before its Content-Length")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "roadsign-agent"
    # One request per connection: its time budget and its worker slot are that request's.
    protocol_version = "HTTP/1.0"

    def __init__(
        self, request: socket.socket, client_address: object, server: _Server, received: bytes = b""
    ) -> None:
        self.received = received  # what the intake took off the socket: the head, perhaps more
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file: every read goes through the clock instead
        self.rfile = io.BufferedReader(
            _ClientClock(self.connection, self.server.api.timeout_s, received=self.received)
        )
        self.body: _Body | None = None
        self.linger = False

    def log_message(self, format: str, *args: object) -> None:
        log.debug("api: " + format, *args)

    def do_GET(self) -> None:
        self.server.api.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.api.handle(self, "POST")

    def unread_body(self) -> bool:
        """Whether the client may still be sending a body this request has not read."""
        if self.body is not None:
            return self.body.remaining > 0
        return "Content-Length" in self.headers or "Transfer-Encoding" in self.headers

    def finish(self) -> None:
        super().finish()
        if self.linger:
            _linger(self.connection)


def _linger(connection: socket.socket) -> None:
    """Say we are done, then drop what the client still sends, briefly (see LINGER_S)."""
    scratch = bytearray(CHUNK)
    dropped, deadline = 0, time.monotonic() + LINGER_S
    try:
        connection.shutdown(socket.SHUT_WR)
        while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            received = connection.recv_into(scratch)
            if not received:
                break
            dropped += received
    except OSError as e:  # the client left or stalled: either way the socket closes now
        log.debug("api: linger ended after %d bytes: %s", dropped, e)


class _Server(HTTPServer):
    """A thread per request whose head is in, at most `max_workers` of them; beyond, 503."""

    # Connections the kernel completes while the intake is busy: as many as may wait for their
    # heads, so that a burst is not met with dropped SYNs (and a client's one-second retry).
    request_queue_size = MAX_WAITING

    def __init__(self, address: tuple[str, int], api: LocalApi, *, max_workers: int) -> None:
        self.api = api
        self.max_workers = max_workers
        self._slots = threading.BoundedSemaphore(max_workers)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def take(self, connection: socket.socket, address: object, received: bytes) -> None:
        """Serve a request whose head is in (`api_intake.Arrived`), or answer 503 at once."""
        if not self._slots.acquire(blocking=False):
            answer_at_once(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"busy: {self.max_workers} requests in progress; retry shortly",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
            return
        try:
            threading.Thread(
                target=self._work,
                args=(connection, address, received),
                name="local-api-request",
                daemon=True,
            ).start()
        except BaseException:
            self._slots.release()
            self.shutdown_request(connection)
            raise

    def _work(self, connection: socket.socket, address: object, received: bytes) -> None:
        try:
            _Handler(connection, address, self, received=received)
        except Exception:  # what LocalApi.handle did not catch (a broken head): keep serving
            log.exception("local API failed on a request from %s", address)
        finally:
            self.shutdown_request(connection)
            self._slots.release()


class LocalApi:
    """Serves the API on a background thread."""

    def __init__(
        self,
        config: LocalApiConfig,
        *,
        reader: Callable[[], SignReader],
        health: Callable[[], dict[str, object]],
        metrics: Callable[[], str],
        reader_key: Callable[[], object] = lambda: None,
    ) -> None:
        self._reader_factory = reader
        self._reader_key = reader_key
        """What names the model the agent runs now (its bundle folder): when it changes (an
        OTA update or rollback), the next request loads the reader again."""
        self._reader: SignReader | None = None
        self._reader_of: object = None
        self._reader_lock = threading.Lock()
        self.health, self.metrics = health, metrics
        self.max_upload_bytes = int(config.max_upload_mb * MIB)
        self.max_batch_bytes = int(config.max_batch_mb * MIB)
        self.max_image_pixels = config.max_image_pixels
        self.timeout_s = config.timeout_s
        self._token = read_token(config.token_file) if config.token_file is not None else None
        if self._token is None and not is_loopback_host(config.host):
            raise AgentError(f"the local API listens on {config.host!r} and needs api.token_file")
        self._host = config.host
        try:
            self._server = _Server((config.host, config.port), self, max_workers=config.max_workers)
        except OSError as e:
            raise AgentError(
                f"the local API cannot listen on {config.host}:{config.port}: {e}"
            ) from e
        self._intake = Intake(
            self._server.socket, header_timeout_s=config.header_timeout_s, arrived=self._server.take
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._intake.serve, args=(self._stopping,), name="local-api", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> LocalApi:
        """Start serving."""
        self._thread.start()
        log.info(
            "local API on %s port %d, %s",
            self._host,
            self.port,
            "bearer token required" if self._token else "no token (loopback only)",
        )
        return self

    def stop(self) -> None:
        """Stop accepting (within `api_intake.POLL_S`); requests being served run on."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._server.server_close()

    def _read(self, data: bytes, source: str) -> dict[str, object]:
        """The readings of one image and the model that read them."""
        checked_header(data, max_pixels=self.max_image_pixels, source=source)
        # One reader for the API, apart from the pipeline's; requests take turns on it, and
        # decode inside the turn, so the API holds one decoded image at a time.
        with self._reader_lock:
            image = decode_image(data, source=source)
            key = self._reader_key()
            if self._reader is None or key != self._reader_of:
                self._reader = None  # the replaced model's memory goes before the next loads
                self._reader = self._reader_factory()
                self._reader_of = key
            metadata = self._reader.detector.metadata
            return {
                "model": {"version": metadata.version, "sha256": metadata.sha256},
                "readings": [reading_fields(r) for r in self._reader.read(image)],
            }

    def handle(self, handler: _Handler, method: str) -> None:
        """Route one request; every failure becomes a JSON error, never a dead thread."""
        path = handler.path.split("?", 1)[0]
        try:
            self._answer(handler, method, path)
        except (TimeoutError, ConnectionError) as e:
            # The client is gone or too slow, perhaps while we answered it: no one is listening.
            log.info("local API dropped a client on %s %s: %s", method, path, e)
            handler.close_connection = True

    def _answer(self, handler: _Handler, method: str, path: str) -> None:
        try:
            self._route(handler, method, path)
        except ApiError as e:
            self._send_json(handler, e.status, {"detail": e.detail}, e.headers)
        except (TimeoutError, ConnectionError):
            raise
        except Exception:  # the device keeps serving whatever one request did
            log.exception("local API failed on %s %s", method, path)
            self._send_json(handler, HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": "internal error"})

    def _route(self, handler: _Handler, method: str, path: str) -> None:
        if (method, path) not in ROUTES:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no {method} {path}")
        if path in CONSTANT_PAGES:
            page, kind = {
                "/": (UPLOAD_PAGE, "text/html"),
                "/docs": (docs_page(), "text/html"),
                "/openapi.json": (json.dumps(OPENAPI), "application/json"),
            }[path]
            self._send(handler, HTTPStatus.OK, page.encode(), kind)
            return
        if self._token is not None and not bearer_matches(
            handler.headers.get("Authorization"), self._token
        ):
            raise unauthorized()
        if path == "/health":
            self._send_json(handler, HTTPStatus.OK, self.health())
        elif path == "/metrics":
            self._send(handler, HTTPStatus.OK, self.metrics().encode(), "text/plain; version=0.0.4")
        else:
            batch = path == "/predict/batch"
            handler.body = _Body(
                handler.rfile,
                declared_length(
                    handler.headers.get_all("Content-Length", []),
                    handler.headers.get_all("Transfer-Encoding", []),
                    limit=self.max_batch_bytes if batch else self.max_upload_bytes,
                ),
            )
            result = self._batch(handler) if batch else self._predict(handler)
            self._send_json(handler, HTTPStatus.OK, result)

    def _predict(self, handler: _Handler) -> dict[str, object]:
        assert handler.body is not None
        content_type = handler.headers.get("Content-Type", "")
        if not content_type.lower().startswith("multipart/"):
            return {"source": "upload", **self._read(handler.body.read_all(), "upload")}
        parts = iter_parts(
            handler.body.read, boundary_of(content_type), max_part_bytes=self.max_upload_bytes
        )
        for part in parts:
            if part.filename is not None:
                return {"source": part.filename, **self._read(part.data, part.filename)}
        raise ApiError(HTTPStatus.BAD_REQUEST, "no file part in the upload")

    def _batch(self, handler: _Handler) -> dict[str, object]:
        assert handler.body is not None
        parts = iter_parts(
            handler.body.read,
            boundary_of(handler.headers.get("Content-Type", "")),
            max_part_bytes=self.max_upload_bytes,
        )
        results: list[dict[str, object]] = []
        for part in parts:
            if part.filename is None:
                continue
            if len(results) == MAX_BATCH_FILES:
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"at most {MAX_BATCH_FILES} files per batch",
                )
            results.append({"source": part.filename, **self._read(part.data, part.filename)})
        if not results:
            raise ApiError(HTTPStatus.BAD_REQUEST, "no file parts in the upload")
        return {"results": results}

    def _send(
        self,
        handler: _Handler,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Writes get the whole timeout again: the read budget is the client's, not ours.
        handler.connection.settimeout(self.timeout_s)
        handler.linger = handler.unread_body()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)

    def _send_json(
        self,
        handler: _Handler,
        status: HTTPStatus,
        payload: object,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send(handler, status, json.dumps(payload).encode(), "application/json", headers)
