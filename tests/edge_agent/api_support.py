"""Talking to the local API from a test, as any client may: through http.client, or as raw
bytes on a socket (lying headers included).

The `serve`, `api` and `token_file` fixtures that start it are in this folder's conftest.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

from edge_agent.api import LocalApi

TOKEN = "s3cret-device-token-0123456789"
Serve = Callable[..., LocalApi]
"""The `serve` fixture: starts a LocalApi whose profile ``api`` section is its keyword args."""


def http_request(
    api: LocalApi,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """One request through http.client: status, Content-Type and body of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type") or "", data


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes (headers any client may write, lying ones included); the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server hung up, looked at without waiting."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)
