"""Where the local API receives each request's head, before any worker is given to it.

A worker (one of ``api.max_workers``) is for a request whose head is in: its token can be
checked at once, so a client that does not hold the token holds a worker for microseconds.
Until then a connection is only a socket in one selector, on the one thread that also
accepts: it costs no thread, and it gets ``api.header_timeout_s`` to send its head (a real
client's head arrives in milliseconds), then it is closed. Clients that dribble their headers
can therefore never take the workers from a client that holds the token; the worst they do is
fill the waiting room, and when it is full the connection that has waited longest is closed to
make room, so a flood pushes out its own oldest sockets rather than a new client.
"""

from __future__ import annotations

import json
import logging
import re
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 2**10
"""Longest request head (request line and headers) taken; a longer one is answered 431. The
API's requests carry a few short headers and a token: this is room to spare, not a need."""

MAX_WAITING = 64
"""Connections whose heads are being received at once. It bounds the file descriptors and
memory (`MAX_HEAD_BYTES` each) that connections without a worker can take; beyond it, the one
that has waited longest is closed."""

POLL_S = 0.1
"""How often the loop looks for its stop event: stopping returns within it."""

# An empty line ends a head; http.server takes bare LF line ends as well as CRLF.
_END_OF_HEAD = re.compile(rb"\n\r?\n")
# What is left over from a refused request is dropped, this much at most, so that closing the
# socket does not reset our answer away before the client reads it.
_DROP_BYTES = 2**20
_DROP_CHUNK = 2**16

Arrived = Callable[[socket.socket, object, bytes], None]
"""Takes over a connection whose head is in: the socket (blocking), the client's address, and
every byte received so far (the head, perhaps the start of the body)."""


def answer_at_once(
    connection: socket.socket,
    status: HTTPStatus,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Send a short JSON error without reading the request, on the calling thread, then close.

    A fresh socket's send buffer takes these few bytes at once; the short timeout bounds the
    rest, so the thread that accepts is never held by a client that does not read.
    """
    body = json.dumps({"detail": detail}).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    try:
        connection.settimeout(0.5)
        connection.sendall(head + body)
        connection.setblocking(False)
        for _ in range(_DROP_BYTES // _DROP_CHUNK):
            if not connection.recv(_DROP_CHUNK):
                break
    except OSError as e:  # BlockingIOError: nothing more to drop; others: the client left
        log.debug("api: %d answer: %s", status.value, e)
    finally:
        _close(connection)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_WR)
    except OSError as e:  # not connected any more: closing is all that is left
        log.debug("api: shutdown: %s", e)
    connection.close()


@dataclass
class _Waiting:
    address: object
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class Intake:
    """Accepts connections on `listener` and hands each to `arrived` once its head is in."""

    def __init__(self, listener: socket.socket, *, header_timeout_s: float, arrived: Arrived):
        self._listener, self._arrived = listener, arrived
        self.header_timeout_s = header_timeout_s
        # In arrival order, which with one timeout is also deadline order.
        self._waiting: OrderedDict[socket.socket, _Waiting] = OrderedDict()
        self._selector = selectors.DefaultSelector()

    def serve(self, stop: threading.Event) -> None:
        """Accept and receive heads until `stop` is set; then close what still waits."""
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not stop.is_set():
                for key, _ in self._selector.select(self._wait_s()):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        assert isinstance(key.fileobj, socket.socket)
                        self._receive(key.fileobj)
                self._expire()
        finally:
            for connection in list(self._waiting):
                self._drop(connection)
            self._selector.close()

    def _wait_s(self) -> float:
        if not self._waiting:
            return POLL_S
        first = next(iter(self._waiting.values()))
        return max(0.0, min(POLL_S, first.deadline - time.monotonic()))

    def _accept(self) -> None:
        try:
            connection, address = self._listener.accept()
        except OSError as e:  # the client left before we took it, or no descriptor is free
            log.debug("api: accept: %s", e)
            return
        if len(self._waiting) >= MAX_WAITING:
            oldest = next(iter(self._waiting))
            log.debug("api: %d connections wait for their heads; closing the oldest", MAX_WAITING)
            self._drop(oldest)
        connection.setblocking(False)
        self._waiting[connection] = _Waiting(address, time.monotonic() + self.header_timeout_s)
        self._selector.register(connection, selectors.EVENT_READ)

    def _receive(self, connection: socket.socket) -> None:
        waiting = self._waiting.get(connection)
        if waiting is None:  # closed earlier in the same round, to make room
            return
        try:
            data = connection.recv(MAX_HEAD_BYTES - len(waiting.head))
        except BlockingIOError:
            return
        except OSError as e:
            log.debug("api: a client left while sending its head: %s", e)
            self._drop(connection)
            return
        if not data:
            self._drop(connection)
            return
        # The end of the head may straddle what came before and what just came.
        searched_from = max(0, len(waiting.head) - 2)
        waiting.head += data
        if _END_OF_HEAD.search(waiting.head, searched_from) is not None:
            self._forget(connection)
            connection.setblocking(True)
            self._arrived(connection, waiting.address, bytes(waiting.head))
        elif len(waiting.head) >= MAX_HEAD_BYTES:
            self._forget(connection)
            answer_at_once(
                connection,
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request line and headers are over the limit of {MAX_HEAD_BYTES} bytes",
            )

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            connection, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                return
            # Debug, not info: a client that does this in a loop must not fill the device's log.
            log.debug(
                "api: %s did not send its head within api.header_timeout_s (%g s); closed",
                waiting.address,
                self.header_timeout_s,
            )
            self._drop(connection)

    def _forget(self, connection: socket.socket) -> None:
        self._selector.unregister(connection)
        del self._waiting[connection]

    def _drop(self, connection: socket.socket) -> None:
        self._forget(connection)
        _close(connection)
